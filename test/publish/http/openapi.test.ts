import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Ajv } from "ajv";
import { OPENAPI_FILE, openApiDocument, openApiText } from "../../../src/publish/http/write-openapi.js";
import { RecordsQuerySchema } from "../../../src/publish/records-api.js";

test("docs/records-openapi.json is what records-api.ts defines (run `npm run api:openapi` after an edit)", () => {
  const committed = readFileSync(OPENAPI_FILE, "utf8");
  const current = openApiText();
  if (committed === current) return;
  const a = committed.split("\n");
  const b = current.split("\n");
  const line = a.findIndex((text, i) => text !== b[i]);
  assert.fail(
    `docs/records-openapi.json is stale from line ${line + 1}:\n  committed: ${a[line]}\n  current:   ${b[line]}\n` +
      "run `npm run api:openapi`",
  );
});

test("the document lists every parameter the server validates, and its schemas compile", () => {
  interface Operation {
    parameters: { name: string; schema: object }[];
    requestBody?: { content: Record<string, { schema: object }> };
    responses: Record<string, { content?: Record<string, { schema: object } | undefined> }>;
  }
  const doc = openApiDocument() as { paths: Record<string, Record<string, Operation>> };
  const records = doc.paths["/api/records"]!.get!;
  assert.deepEqual(
    records.parameters.map((p) => p.name),
    Object.keys(RecordsQuerySchema.properties),
  );
  const ajv = new Ajv({ strict: false });
  for (const route of Object.values(doc.paths)) {
    for (const operation of Object.values(route)) {
      for (const p of operation.parameters) ajv.compile(p.schema);
      const body = operation.requestBody?.content["application/json"];
      if (body !== undefined) ajv.compile(body.schema);
      const json = operation.responses["200"]!.content!["application/json"];
      if (json !== undefined) ajv.compile(json.schema);
    }
  }
  // a change to a definition shows in the document, so the staleness check above can fail
  const edited = structuredClone(RecordsQuerySchema.properties.limit) as { maximum: number };
  assert.equal(edited.maximum, 1000);
  assert.match(openApiText(), /"maximum": 1000/);
});
