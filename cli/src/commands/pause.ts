import { eachDomainCommand } from "../base.js";

export default eachDomainCommand({
  summary: "Pause running domains (their vCPUs stop; memory is kept).",
  description: "Like qvm-pause. Resume with `qvm unpause`.",
  what: "Domains to pause.",
  call: (admin, name) => admin.pauseDomain({ name }),
});
