// Every qvm command, by name: oclif's "explicit" command discovery reads this object from the
// bundle (cli/package.json: oclif.commands), so the whole CLI is one file. One command per file
// in commands/; names are Qubes' tool names without the "qvm-" prefix.
import Apply from "./commands/apply.js";
import Backup from "./commands/backup.js";
import Check from "./commands/check.js";
import Clipboard from "./commands/clipboard.js";
import Clone from "./commands/clone.js";
import Console from "./commands/console.js";
import Create from "./commands/create.js";
import Daemon from "./commands/daemon.js";
import Features from "./commands/features.js";
import Firewall from "./commands/firewall.js";
import Kill from "./commands/kill.js";
import Ls from "./commands/ls.js";
import Pause from "./commands/pause.js";
import Pci from "./commands/pci.js";
import Policy from "./commands/policy.js";
import Prefs from "./commands/prefs.js";
import Remove from "./commands/remove.js";
import Run from "./commands/run.js";
import SetupNetwork from "./commands/setup-network.js";
import Shell from "./commands/shell.js";
import Shutdown from "./commands/shutdown.js";
import Start from "./commands/start.js";
import Tags from "./commands/tags.js";
import Template from "./commands/template.js";
import Unpause from "./commands/unpause.js";
import Usb from "./commands/usb.js";
import Volume from "./commands/volume.js";

export const COMMANDS = {
  apply: Apply,
  backup: Backup,
  check: Check,
  clipboard: Clipboard,
  clone: Clone,
  console: Console,
  create: Create,
  daemon: Daemon,
  features: Features,
  firewall: Firewall,
  kill: Kill,
  ls: Ls,
  pause: Pause,
  pci: Pci,
  policy: Policy,
  prefs: Prefs,
  remove: Remove,
  run: Run,
  "setup-network": SetupNetwork,
  shell: Shell,
  shutdown: Shutdown,
  start: Start,
  tags: Tags,
  template: Template,
  unpause: Unpause,
  usb: Usb,
  volume: Volume,
};
