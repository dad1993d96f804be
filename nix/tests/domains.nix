# A declaration that exercises every field of the domains file: scripts/nix-check.sh (through
# nix/tests/default.nix) and the flake's module-domains check turn it into the file `qvm apply`
# takes and compare that with domains-expected.json, which scripts/nix-data.test.mjs checks
# against qvm's own parser of the file.
{
  services.qvmd = {
    enable = true;
    domains = {
      # A net domain whose uplink is passt, as `qvm setup-network` makes sys-net.
      sys-net = {
        label = "red";
        netvm = "";
        memory = 512;
        properties = {
          provides_network = true;
          uplink = "passt";
          autostart = true;
        };
        tags = [ "net" ];
      };
      work = {
        label = "blue";
        template = "debian-12";
        netvm = "sys-net";
        memory = 800;
        vcpus = 2;
        properties.maxmem = 4000;
        features = {
          "service.cups" = "1";
        };
        tags = [
          "office"
          "backup"
        ];
        firewall = [
          "accept example.com tcp 443"
          "accept specialtarget=dns"
          "drop"
        ];
      };
      # Offline: netvm "" is none, not "the default netvm".
      vault = {
        label = "black";
        template = "debian-12";
        netvm = "";
      };
      # An AppVM that disposables are made from, and one of them kept declared.
      dvm = {
        label = "gray";
        template = "debian-12";
        properties.template_for_dispvms = true;
      };
      scratch = {
        class = "DispVM";
        label = "orange";
        template = "dvm";
      };
      builder = {
        class = "StandaloneVM";
        label = "purple";
        template = "debian-12";
        properties = {
          kernelopts = "quiet";
          vmm = "qemu";
        };
      };
    };
    policy."30-user.policy" = ''
      qubes.Filecopy * work vault ask default_target=vault
      qubes.OpenURL * @anyvm @dispvm allow
    '';
  };
}
