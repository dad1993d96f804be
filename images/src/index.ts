// Public surface of the image builder.
export { ImageStore, defaultImagesDir, BUILD_COMMAND, type KernelBundle, type TemplateImage } from "./store.js";
export { buildKernelBundle, INITRAMFS_MODULES } from "./kernel.js";
export { ImageIntegrity, VERIFIED_CACHE_FILE, type EntryReport, type FileCheck } from "./integrity.js";
export { buildTemplate, TEMPLATES, DEFAULT_USER } from "./template.js";
export {
  exportTemplateArchive,
  importTemplateArchive,
  templateArchiveManifestSchema,
  formatBytes,
  TEMPLATE_ARCHIVE_FORMAT,
  MAX_TEMPLATE_MANIFEST_BYTES,
  MAX_TEMPLATE_ROOT_BYTES,
  type TemplateArchiveManifest,
  type ImportTemplateOptions,
  type TemplateArchiveOptions,
} from "./template-archive.js";
export { terminalProgress, silentProgress, type Progress } from "./progress.js";
export { writeJsonAtomic, writeFileAtomic, readJson, fsyncDir } from "./json-file.js";
export { repoRoot, repoPath } from "./repo.js";
export { loadOrder, parseModulesDep } from "./modules.js";
