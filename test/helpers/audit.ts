import assert from "node:assert/strict";
import { readAuditEntries } from "../../src/publish/audit/audit-files.js";
import type { StoredAuditEntry } from "../../src/publish/audit.js";

/**
 * A test daemon's audit log (never rotated in a test), oldest first, read as the daemon reads it; a line that is
 * not an entry fails the test rather than being skipped.
 */
export async function auditEntries(file: string): Promise<StoredAuditEntry[]> {
  const { entries, skipped } = await readAuditEntries(file, 0);
  assert.deepEqual(skipped, [], `${file}: lines that are not audit entries`);
  return entries;
}
