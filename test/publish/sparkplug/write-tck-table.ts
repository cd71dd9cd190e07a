/**
 * Writes the edge-node requirement table (tck-requirements.ts) into docs/line-integration/sparkplug.md, between
 * its tck-table markers: `npx tsc -p . && node dist/test/publish/sparkplug/write-tck-table.js`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { tckTable } from "./tck-requirements.js";

export const SPARKPLUG_DOC = path.resolve(
  import.meta.dirname,
  "../../../../docs/line-integration/sparkplug.md",
);
const BEGIN = "<!-- tck-table:begin (generated from test/publish/sparkplug/tck-requirements.ts) -->";
const END = "<!-- tck-table:end -->";

/** The page with the table between the markers replaced by the current one. */
export function withTckTable(page: string, table = tckTable()): string {
  const begin = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`${SPARKPLUG_DOC}: no "${BEGIN}" … "${END}" markers`);
  return `${page.slice(0, begin + BEGIN.length)}\n\n${table}\n\n${page.slice(end)}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(SPARKPLUG_DOC, withTckTable(readFileSync(SPARKPLUG_DOC, "utf8")));
  console.log(`wrote ${SPARKPLUG_DOC}`);
}
