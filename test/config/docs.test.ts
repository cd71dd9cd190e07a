import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { configSchemaJson } from "../../src/config/schema.js";
import type { SchemaNode } from "../../src/config/validate.js";
import { COLUMNS, type Column, configDocsText, DOCS_FILE, keyDocs } from "../../src/config/write-docs.js";

const schema = configSchemaJson() as SchemaNode;

test("docs/configuration.md is what src/config/schema.ts defines (run `npm run config:docs` after an edit)", () => {
  const committed = readFileSync(DOCS_FILE, "utf8");
  const current = configDocsText();
  if (committed === current) return;
  const a = committed.split("\n");
  const b = current.split("\n");
  const line = a.findIndex((text, i) => text !== b[i]);
  assert.fail(
    `docs/configuration.md is stale from line ${line + 1}:\n  committed: ${a[line]}\n  schema:    ${b[line]}\n` +
      "run `npm run config:docs`",
  );
});

test("a changed default or description changes the page, so the comparison above catches it", () => {
  const edited = structuredClone(schema) as {
    properties: { inference: { properties: { max_batch: { default: number; description: string } } } };
  };
  edited.properties.inference.properties.max_batch.default = 4;
  assert.notEqual(configDocsText(edited as unknown as SchemaNode), configDocsText(schema));
  assert.match(
    configDocsText(edited as unknown as SchemaNode),
    /\| `inference\.max_batch` \| integer \| `4` \|/,
  );
});

/** Every key path the schema allows, walked independently of the generator (objects, array items, unions). */
function schemaPaths(node: SchemaNode, prefix: string): string[] {
  const out: string[] = [];
  const walk = (n: SchemaNode, p: string): void => {
    for (const [name, child] of Object.entries(n.properties ?? {})) {
      const path = p === "" ? name : `${p}.${name}`;
      out.push(path);
      const items = child.items;
      if (child.type === "array" && items && !Array.isArray(items)) walk(items as SchemaNode, `${path}[]`);
      walk(child, path);
    }
    for (const branch of n.anyOf ?? []) walk(branch, p);
  };
  walk(node, prefix);
  return out;
}

test("every key of the schema has a row with its type, default and bounds", () => {
  const rows = keyDocs(schema, "", false);
  const documented = new Set(rows.map((row) => row.path.replace(/\[\{name: \w+\}\]/, "[]")));
  for (const path of schemaPaths(schema, "")) {
    if (path.endsWith("providers[].device_id")) continue; // documented per provider, checked below
    assert.ok(documented.has(path), `no row for ${path}`);
  }
  const page = configDocsText();
  assert.match(page, /\| `cameras\[\]\.restart_backoff\.initial_ms` \| integer \| `500` \| ≥ 1 \|/);
  assert.match(page, /\| `cameras\[\]\.threshold\.false_alarm_rate` \| number \| {2}\| > 0; < 1 \|/);
  assert.match(page, /\| `inference\.providers\[\{name: cuda\}\]\.device_id` \| integer \| `0` \| ≥ 0 \|/);
  assert.match(page, /\| `mqtt\.url` \| string \| required \|/);
  assert.match(page, /\| `mqtt\.snapshot` \| string \| `"topic"` \| `topic`, `inline`, `none` \|/);
  assert.match(page, /\| `cameras\[\]\.id` \| string \| required \| must contain only letters/);
});

test("one more column is one more entry in COLUMNS: every row gets the cell, escaped for the table", () => {
  const reload: Column = {
    header: "reload",
    cell: (key) => (key.path === "log.level" ? "live | restart" : ""),
  };
  const page = configDocsText(schema, [...COLUMNS, reload]);
  const tableLines = page.split("\n").filter((line) => line.startsWith("|"));
  const headers = tableLines.filter((line) => line.startsWith("| key |"));
  assert.equal(headers.length, Object.keys(schema.properties ?? {}).length, "one table per section");
  for (const header of headers) assert.match(header, /\| description \| reload \|$/);
  assert.match(
    page,
    /\| `log\.level` \| string \| `"info"` \| .* \| Least severe level that is logged\. \| live \\\| restart \|/,
  );
  assert.equal(
    tableLines.filter((line) => line.endsWith(" |  |")).length + 1,
    tableLines.length - 2 * headers.length,
    "every other key row has the new (empty) cell",
  );
});
