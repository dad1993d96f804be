# Nix option types from a JSON Schema: the schema of `qvm apply`'s file, which
# scripts/gen-nix-data.mjs writes into nix/generated/qvm-data.json from the zod schema qvm itself
# parses the file with. Typing `services.qvmd.domains` from it makes a wrong label, a memory size
# out of range or an unknown field fail at evaluation (nixos-rebuild), not at boot when
# qvm-apply.service runs, and leaves no second copy of the format to drift.
#
# Only the subset z.toJSONSchema emits for that file is understood. Anything else throws, naming
# the construct, so a schema change that needs work here shows up in scripts/nix-check.sh rather
# than as a silently looser type. What JSON Schema cannot say (reserved names, which class may set
# which property, firewall rule syntax) stays with qvm apply; nix/module.nix asserts what it can,
# the domain names among them (see namesMatching).
#
# Pure: needs only nixpkgs' lib.
{ lib }:
let
  inherit (lib) types mkOption;

  unsupported =
    what: schema:
    throw "nix/lib/json-schema.nix: ${what} is not supported: ${builtins.toJSON schema}";

  # builtins.match is POSIX ERE; the JavaScript patterns in the schema are written in their common
  # subset. Refuse what ERE reads differently (\d, \w, \s, \b and (?…) groups).
  erePattern =
    p:
    if builtins.match ".*(\\\\[dDwWsSbB]|\\(\\?).*" p != null then
      unsupported "a JavaScript-only regular expression" p
    else
      p;

  withCheck =
    description: check: type:
    types.addCheck type check // { description = "${type.description} (${description})"; };

  bounded =
    schema: type:
    let
      min = schema.minimum or null;
      max = schema.maximum or null;
    in
    if min != null && max != null && type.name == "int" then
      types.ints.between min max
    else if min != null || max != null then
      withCheck "between ${toString min} and ${toString max}" (
        v: (min == null || v >= min) && (max == null || v <= max)
      ) type
    else
      type;

  stringType =
    schema:
    let
      base = if schema ? pattern then types.strMatching (erePattern schema.pattern) else types.str;
    in
    if schema ? maxLength then
      # stringLength counts bytes, JavaScript UTF-16 units: stricter only for non-ASCII text.
      withCheck "at most ${toString schema.maxLength} bytes" (
        s: builtins.stringLength s <= schema.maxLength
      ) base
    else
      base;

  # Checked in merge rather than with types.addCheck, whose check lib's v2 merge skips for
  # attribute sets. Not possible for a set of submodules: the module system rebuilds that type
  # from its functor and drops a merge of ours, so its names are the caller's to assert
  # (nix/module.nix does for the domains).
  namesMatching =
    schema: type:
    if schema ? propertyNames && type.getSubModules == null then
      let
        p = erePattern (schema.propertyNames.pattern or (unsupported "propertyNames without a pattern" schema));
      in
      type
      // {
        description = "${type.description} (names matching ${p})";
        merge =
          loc: defs:
          let
            wrong = lib.filter (n: builtins.match p n == null) (lib.concatMap (d: builtins.attrNames d.value) defs);
          in
          if wrong != [ ] then
            throw "The option `${lib.showOption loc}' has names that do not match ${p}: ${lib.concatStringsSep ", " wrong}"
          else
            type.merge loc defs;
      }
    else
      type;

  maxItems =
    schema: type:
    if schema ? maxItems then
      withCheck "at most ${toString schema.maxItems} items" (l: builtins.length l <= schema.maxItems) type
    else
      type;

  # One option of an object: an optional field is null until set, and left out of the file then.
  fieldOption =
    describe: required: name: schema:
    let
      type = typeOf describe schema;
      description = describe name;
    in
    if required then
      mkOption { inherit type description; }
    else
      mkOption {
        type = types.nullOr type;
        default = null;
        inherit description;
      };

  typeOf =
    describe: schema:
    if schema ? anyOf then
      types.oneOf (map (typeOf describe) schema.anyOf)
    else if schema ? const then
      types.enum [ schema.const ]
    else if schema ? enum then
      types.enum schema.enum
    else
      let
        t = schema.type or (unsupported "a schema without a type" schema);
      in
      if t == "string" then
        stringType schema
      else if t == "integer" then
        bounded schema types.int
      else if t == "number" then
        bounded schema types.number
      else if t == "boolean" then
        types.bool
      else if t == "array" then
        maxItems schema (types.listOf (typeOf describe schema.items))
      else if t == "object" && schema ? properties then
        if (schema.additionalProperties or true) != false then
          unsupported "an object with both properties and other keys" schema
        else
          types.submodule {
            options = lib.mapAttrs (
              name: fieldOption describe (builtins.elem name (schema.required or [ ])) name
            ) schema.properties;
          }
      else if t == "object" && builtins.isAttrs (schema.additionalProperties or null) then
        namesMatching schema (types.attrsOf (typeOf describe schema.additionalProperties))
      else
        unsupported "this schema" schema;
in
{
  # typeOf describe schema: the option type of values `schema` accepts. `describe NAME` gives the
  # description of an object's field NAME (null for none).
  inherit typeOf;

  # The value with every null field left out, recursively: what nix/module.nix writes to the file
  # from a submodule's options, whose unset optional fields are null.
  dropNulls =
    let
      go =
        v:
        if builtins.isAttrs v then
          lib.mapAttrs (_: go) (lib.filterAttrs (_: x: x != null) v)
        else if builtins.isList v then
          map go v
        else
          v;
    in
    go;
}
