// Every `qvm` command is documented where people look: a section in docs/cli.md and a row in the
// README's command table. A new command without both fails here.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const root = new URL("../../", import.meta.url);
const commands = readdirSync(new URL("cli/src/commands/", root))
  .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
  .map((f) => f.slice(0, -3));

describe("command docs", () => {
  it.each(commands)("qvm %s has a section in docs/cli.md and a README row", (cmd) => {
    const cli = readFileSync(new URL("docs/cli.md", root), "utf8");
    const readme = readFileSync(new URL("README.md", root), "utf8");
    expect(cli).toMatch(new RegExp(`^### .*\`qvm ${cmd}\\b`, "m"));
    expect(readme).toMatch(new RegExp(`^\\| .*\`qvm ${cmd}\\b`, "m"));
  });
});
