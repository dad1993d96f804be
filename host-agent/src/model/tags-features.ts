// Rules for tags and features. Tags name groups of domains in policy (@tag:T), so they follow
// Qubes' tag syntax; features are free-form key/value settings with bounded size.
import { QvmError } from "@qvm/protocol";

const TAG_RE = /^[a-zA-Z0-9_-]{1,64}$/;
const FEATURE_RE = /^[a-zA-Z0-9_.:-]{1,64}$/;
export const MAX_FEATURE_VALUE = 4096;
export const MAX_TAGS = 256;
export const MAX_FEATURES = 256;

export function validateTag(tag: string): string {
  if (!TAG_RE.test(tag)) throw new QvmError("INVALID_ARGUMENT", `invalid tag ${JSON.stringify(tag.slice(0, 80))}: use 1-64 letters, digits, "_" or "-"`);
  return tag;
}

export function validateFeature(name: string, value?: string): void {
  if (!FEATURE_RE.test(name)) {
    throw new QvmError("INVALID_ARGUMENT", `invalid feature name ${JSON.stringify(name.slice(0, 80))}: use 1-64 letters, digits, "_", ".", ":" or "-"`);
  }
  if (value !== undefined && (value.length > MAX_FEATURE_VALUE || /[\x00]/.test(value))) {
    throw new QvmError("INVALID_ARGUMENT", `feature ${name}: the value must be text of at most ${MAX_FEATURE_VALUE} characters`);
  }
}
