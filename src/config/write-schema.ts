/**
 * `npm run config:schema`: writes `config/stpmd.schema.json` from the definition in `schema.ts`. The file is
 * committed (editors and users read it); `test/config/schema.test.ts` fails when it is stale.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { configSchemaJson } from "./schema.js";

/**
 * A committed file generated from the schema, by its path in the repository: the root is two levels above
 * `src/config/`, three above `dist/src/config/` when compiled.
 */
export function repoFile(relative: string): string {
  const root = import.meta.url.includes("/dist/") ? "../../.." : "../..";
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), root, relative);
}

/** The committed JSON Schema. */
export const SCHEMA_FILE = repoFile("config/stpmd.schema.json");

export function schemaFileText(): string {
  return `${JSON.stringify(configSchemaJson(), null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(SCHEMA_FILE, schemaFileText());
  console.log(`wrote ${SCHEMA_FILE}`);
}
