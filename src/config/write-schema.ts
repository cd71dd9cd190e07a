/**
 * `npm run config:schema`: writes `config/stpmd.schema.json` from the definition in `schema.ts`. The file is
 * committed (editors and users read it); `test/config/schema.test.ts` fails when it is stale.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { configSchemaJson } from "./schema.js";

/** The committed schema file: two levels above `dist/src/config/` (or `src/config/` when run from source). */
export const SCHEMA_FILE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  import.meta.url.includes("/dist/") ? "../../../config/stpmd.schema.json" : "../../config/stpmd.schema.json",
);

export function schemaFileText(): string {
  return `${JSON.stringify(configSchemaJson(), null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(SCHEMA_FILE, schemaFileText());
  console.log(`wrote ${SCHEMA_FILE}`);
}
