/** Labelling a record, shared by the review queue's keys and the part page's buttons. */
import { api, type Label, type PartRecord } from "./api.js";
import type { Shared } from "./shared.js";

export const LABEL_TEXT: Record<string, string> = {
  false_alarm: "false alarm",
  confirmed_defect: "confirmed defect",
};

export function labelText(label: string | null): string {
  return label === null ? "not reviewed" : (LABEL_TEXT[label] ?? label);
}

/**
 * Sets (or with `null` undoes) a record's label as the logged-in operator (a confirmed defect with its type, the
 * server's default when none is given); resolves with the record as the server
 * now has it. Throws the server's one-line refusal.
 */
export async function applyLabel(
  shared: Shared,
  record: PartRecord,
  label: Label | null,
  defectType?: string,
): Promise<PartRecord> {
  if (shared.session === null) throw new Error("log in to label parts");
  const reply = label === null ? await api.unlabel(record.id) : await api.label(record.id, label, defectType);
  const files = "files" in reply ? reply.files : reply.files_removed;
  const what =
    label === null ? `undid the label of part ${record.id}` : `part ${record.id}: ${LABEL_TEXT[label]}`;
  shared.log(
    `${what}${files.length > 0 ? ` (${files.length} file${files.length === 1 ? "" : "s"})` : ""}`,
    true,
  );
  return reply.record;
}
