import { eachDomainCommand } from "../base.js";

export default eachDomainCommand({
  summary: "Stop domains at once, like pulling the plug.",
  description: "Like qvm-kill: the VMM is killed without asking the guest; unsaved data in the guest is lost.",
  what: "Domains to kill.",
  call: (admin, name) => admin.killDomain({ name }),
});
