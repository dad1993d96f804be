// Builds the kernel bundle and the debian-12 template once per test run (cached by input hash in
// QVM_IMAGES_DIR, default .qvm/images in the repository), and the guest agent bundle they embed.
import path from "node:path";
import { execFileSync } from "node:child_process";
import { ImageStore, buildKernelBundle, buildTemplate, terminalProgress, repoRoot } from "@qvm/images";

export default async function setup(): Promise<void> {
  const root = repoRoot();
  process.env.QVM_IMAGES_DIR ??= path.join(root, ".qvm/images");
  execFileSync("node", [path.join(root, "scripts/build.mjs"), "guest-agent", "qrexec-tools", "qvmd", "cli", "gui-proxy", "web", "display"], { stdio: "inherit", cwd: root });
  const store = new ImageStore(process.env.QVM_IMAGES_DIR);
  const progress = terminalProgress(process.stderr, "e2e images");
  await buildKernelBundle(store, progress);
  await buildTemplate(store, "debian-12", progress);
}
