// Public surface of the image builder.
export { ImageStore, defaultImagesDir, BUILD_COMMAND, type KernelBundle, type TemplateImage } from "./store.js";
export { buildKernelBundle, INITRAMFS_MODULES } from "./kernel.js";
export { buildTemplate, TEMPLATES, DEFAULT_USER } from "./template.js";
export { terminalProgress, silentProgress, type Progress } from "./progress.js";
export { writeJsonAtomic, writeFileAtomic, readJson } from "./json-file.js";
export { repoRoot, repoPath } from "./repo.js";
export { loadOrder, parseModulesDep } from "./modules.js";
