/**
 * `npm run config:docs`: writes `docs/configuration.md` from the definition in `schema.ts`, one table per top-level
 * section and one row per key. The page is committed (the docs link to it); `test/config/docs.test.ts` fails when it
 * is stale, so the schema stays the one place a key is documented.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { RELOAD_RULE_TEXT, RELOAD_RULES, reloadRuleOf } from "./reload.js";
import { configSchemaJson } from "./schema.js";
import type { SchemaNode } from "./validate.js";
import { repoFile } from "./write-schema.js";

/** One documented key: its path as a user writes it, its schema, and whether the file must give it. */
export interface KeyDoc {
  readonly path: string;
  readonly schema: SchemaNode;
  readonly required: boolean;
}

/** A column of the key tables. Adding a column (e.g. what a reload does with the key) is one entry here. */
export interface Column {
  readonly header: string;
  readonly cell: (key: KeyDoc) => string;
}

export const COLUMNS: readonly Column[] = [
  { header: "key", cell: (key) => code(key.path) },
  { header: "type", cell: (key) => typeText(key.schema) },
  { header: "default", cell: defaultText },
  { header: "allowed", cell: (key) => allowedText(key.schema) },
  { header: "reload", cell: (key) => reloadRuleOf(key.path) ?? "" },
  { header: "description", cell: (key) => key.schema.description ?? "" },
];

/** The committed page. */
export const DOCS_FILE = repoFile("docs/configuration.md");

function code(text: string): string {
  // A backtick inside the text would end the span early: use a longer fence (CommonMark's rule).
  return text.includes("`") ? `\`\` ${text} \`\`` : `\`${text}\``;
}

function json(value: unknown): string {
  return JSON.stringify(value)
    .replace(/,(?=["{[\w-])/g, ", ")
    .replace(/":/g, '": ');
}

/** The JSON Schema type in words: `integer`, `array of string`, `[number, number]`, `one of {sigma}, …`. */
export function typeText(schema: SchemaNode): string {
  const alternatives = schema.anyOf ?? (schema.type === undefined ? schema.oneOf : undefined);
  if (alternatives) return `one of ${alternatives.map(shapeText).join(", ")}`;
  if (schema.type === "array") {
    const items = schema.items;
    if (Array.isArray(items)) return `[${items.map((item: SchemaNode) => typeText(item)).join(", ")}]`;
    if (items && !Array.isArray(items)) return `array of ${typeText(items as SchemaNode)}`;
    return "array";
  }
  return schema.type ?? "any";
}

/** An object branch of a union named by its keys, e.g. `{sigma}`. */
function shapeText(schema: SchemaNode): string {
  if (schema.type !== "object" || !schema.properties) return typeText(schema);
  return `\`{${Object.keys(schema.properties).join(", ")}}\``;
}

function defaultText(key: KeyDoc): string {
  if (key.schema.default !== undefined) return code(json(key.schema.default));
  return key.required ? "required" : "";
}

const BOUNDS: readonly [keyword: string, render: (value: unknown) => string][] = [
  ["minimum", (v) => `≥ ${v}`],
  ["exclusiveMinimum", (v) => `> ${v}`],
  ["maximum", (v) => `≤ ${v}`],
  ["exclusiveMaximum", (v) => `< ${v}`],
  ["minLength", (v) => (v === 1 ? "not empty" : `at least ${v} characters`)],
  ["minItems", (v) => `at least ${v} item${v === 1 ? "" : "s"}`],
  ["maxItems", (v) => `at most ${v} items`],
  ["uniqueItems", (v) => (v === true ? "no duplicates" : "")],
];

/** Allowed values and bounds: the enum, numeric and length limits, and the pattern's own message. */
export function allowedText(schema: SchemaNode): string {
  const parts: string[] = [];
  if (schema.enum) parts.push(schema.enum.map((value) => code(String(value))).join(", "));
  const tuple = Array.isArray(schema.items); // its type, `[number, number]`, already says how many items
  for (const [keyword, render] of BOUNDS) {
    if (tuple && (keyword === "minItems" || keyword === "maxItems")) continue;
    if (schema[keyword] !== undefined) parts.push(render(schema[keyword]));
  }
  const pattern = schema.pattern;
  if (typeof pattern === "string") {
    const message = schema["x-pattern-message"];
    parts.push(typeof message === "string" ? message : `matches ${code(pattern)}`);
  }
  const items = schema.items;
  if (items && !Array.isArray(items) && typeText(items as SchemaNode) !== "object") {
    const inner = allowedText(items as SchemaNode);
    if (inner) parts.push(`each: ${inner}`);
  }
  return parts.filter((part) => part !== "").join("; ");
}

/**
 * Every key under `schema`, depth first in the schema's order: an object's row, then its keys'; array items as
 * `key[]`; the branches of a union of objects (threshold rules, execution providers) with their own keys.
 */
export function keyDocs(schema: SchemaNode, prefix: string, required: boolean): KeyDoc[] {
  const items = schema.items;
  const element =
    schema.type === "array" && items && !Array.isArray(items) ? (items as SchemaNode) : undefined;
  const nested = element && (element.properties || element.oneOf) ? childDocs(element, `${prefix}[]`) : [];
  return [
    ...(prefix === "" ? [] : [{ path: prefix, schema, required }]),
    ...nested,
    ...childDocs(schema, prefix),
  ];
}

/** The keys of an object, and of each branch of its union. */
function childDocs(schema: SchemaNode, prefix: string): KeyDoc[] {
  const rows = propertyDocs(schema, prefix);
  const discriminator = (schema.discriminator as { propertyName?: string } | undefined)?.propertyName;
  for (const branch of schema.oneOf ?? []) {
    const tag = discriminator ? branch.properties?.[discriminator]?.const : undefined;
    const branchPath =
      tag === undefined ? prefix : `${prefix.replace(/\[\]$/, "")}[{${discriminator}: ${tag}}]`;
    rows.push({ path: branchPath, schema: branch, required: false });
    rows.push(...propertyDocs(branch, branchPath).filter((row) => !row.path.endsWith(`.${discriminator}`)));
  }
  // A key of one branch of a union (a threshold rule's `sigma`) is required only once that branch is chosen.
  for (const branch of schema.anyOf ?? []) {
    rows.push(...propertyDocs(branch, prefix).map((row) => ({ ...row, required: false })));
  }
  return rows;
}

function propertyDocs(schema: SchemaNode, prefix: string): KeyDoc[] {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {}).flatMap(([name, child]) =>
    keyDocs(child, prefix === "" ? name : `${prefix}.${name}`, required.has(name)),
  );
}

function cellText(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\s*\n\s*/g, " ");
}

function table(keys: readonly KeyDoc[], columns: readonly Column[]): string {
  const header = `| ${columns.map((column) => column.header).join(" | ")} |`;
  const rule = `|${columns.map(() => "---").join("|")}|`;
  const rows = keys.map((key) => `| ${columns.map((column) => cellText(column.cell(key))).join(" | ")} |`);
  return [header, rule, ...rows].join("\n");
}

/** The whole page, generated from `schema` (the daemon's by default). */
export function configDocsText(
  schema: SchemaNode = configSchemaJson() as SchemaNode,
  columns: readonly Column[] = COLUMNS,
): string {
  const sections = Object.entries(schema.properties ?? {});
  const topRequired = new Set(schema.required ?? []);
  const lines = [
    "<!-- Generated from src/config/schema.ts by `npm run config:docs`; do not edit (a test fails when stale). -->",
    "",
    "# Configuration reference",
    "",
    schema.description ?? "",
    "",
    "Every key of the file, section by section: its type, its default (filled in by the loader when the file leaves",
    "the key out), the values it allows, and what it does. The same definition is shipped as a JSON Schema,",
    "[`config/stpmd.schema.json`](../config/stpmd.schema.json), for editors. How the file is loaded, environment",
    "overrides and examples: [getting started](getting-started.md#the-configuration-file).",
    "",
    "The reload column says what a reload (SIGHUP, or `reload` from any interface) does with a change of the key:",
    ...RELOAD_RULES.map((rule) => `- \`${rule}\`: ${RELOAD_RULE_TEXT[rule]}.`),
    "",
    `Sections: ${sections.map(([name]) => `[\`${name}\`](#${name})`).join(", ")}.`,
  ];
  for (const [name, section] of sections) {
    // The section's own row (first in its table) carries its description, so no paragraph repeats it.
    lines.push("", `## ${name}`, "", table(keyDocs(section, name, topRequired.has(name)), columns));
  }
  return `${lines.join("\n")}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(DOCS_FILE, configDocsText());
  console.log(`wrote ${DOCS_FILE}`);
}
