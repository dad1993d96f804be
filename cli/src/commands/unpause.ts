import { eachDomainCommand } from "../base.js";

export default eachDomainCommand({
  summary: "Resume paused domains.",
  description: "Like qvm-unpause.",
  what: "Domains to resume.",
  call: (admin, name) => admin.unpauseDomain({ name }),
});
