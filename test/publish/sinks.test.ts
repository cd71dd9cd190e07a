import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { createLogger } from "../../src/core/log.js";
import { createSinks, SINKS } from "../../src/publish/sinks.js";
import { testConfig } from "../helpers/config.js";
import { importEdges } from "../helpers/imports.js";
import { TestLineControl } from "../helpers/line-control.js";
import { testSinkContext } from "../helpers/sink-context.js";

const logger = createLogger("silent");
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const publishDir = path.join(repoRoot, "src/publish");

/**
 * Folders of src/publish that are services the sinks share, not outputs: the review labels (served by the HTTP
 * sink, counted in the daemon's snapshot, their false alarms kept by the collector) and the audit log (which the
 * daemon owns and hands the control and the sinks through publish/audit.ts, and the CLI reads for its export).
 */
const NOT_SINKS = new Set(["audit", "review"]);

/** The sink folders: every subfolder of src/publish but {@link NOT_SINKS}. */
function sinkFolders(): string[] {
  return readdirSync(publishDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !NOT_SINKS.has(entry.name))
    .map((entry) => entry.name)
    .sort();
}

/** The sink folder a file of src/ lies in, or undefined for any other file. */
function folderOf(file: string): string | undefined {
  const parts = file.split("/");
  return parts[0] === "src" && parts[1] === "publish" && parts.length > 3 && !NOT_SINKS.has(parts[2]!)
    ? parts[2]
    : undefined;
}

test("createSinks builds each output only when its configuration enables it, in registration order", () => {
  const control = new TestLineControl();
  const names = (partial: Parameters<typeof testConfig>[0]) =>
    createSinks(testSinkContext(testConfig(partial), control, logger)).map((sink) => sink.name);
  assert.deepEqual(
    names({}),
    ["mqtt", "records"],
    "MQTT and the part record always; the others are off by default",
  );
  assert.deepEqual(names({ http: { enabled: true }, collection: { enabled: true } }), [
    "mqtt",
    "collection",
    "records",
    "http",
  ]);
  assert.deepEqual(
    names({
      records: { enabled: false },
      sparkplug: { enabled: true, group_id: "line1" },
      opcua: { enabled: true, allow_anonymous: true },
    }),
    ["mqtt", "sparkplug", "opcua"],
  );
  const durable = createSinks(
    testSinkContext(
      testConfig({
        http: { enabled: true },
        sparkplug: { enabled: true, group_id: "line1" },
        records: { enabled: false },
      }),
      control,
      logger,
    ),
  ).map((sink) => [sink.name, sink.durable]);
  assert.deepEqual(durable, [
    ["mqtt", true],
    ["http", false],
    ["sparkplug", true],
  ]);
});

test("two sinks of one name are refused", () => {
  const control = new TestLineControl();
  assert.throws(
    () => createSinks(testSinkContext(testConfig(), control, logger), [...SINKS, SINKS[0]!]),
    /two sinks are named "mqtt"/,
  );
});

test("a new sink needs its own folder and one line in sinks.ts, nothing else: only the registry reaches into a sink folder", () => {
  const folders = sinkFolders();
  assert.deepEqual(folders, ["collection", "http", "mqtt", "opcua", "records", "sparkplug"]);
  const edges = importEdges();
  // no file outside a sink folder imports into it, except the registry; a sink folder never imports another one
  const reachingIn = edges
    .filter(({ from, to }) => folderOf(to) !== undefined && folderOf(from) !== folderOf(to))
    .filter(({ from }) => from !== "src/publish/sinks.ts")
    .map(({ from, to }) => `${from} → ${to}`);
  assert.deepEqual(reachingIn, []);
  // the registry imports each folder once, through its sink.ts, and lists its factory once in SINKS
  const registry = readFileSync(path.join(publishDir, "sinks.ts"), "utf8");
  const registered = edges
    .filter(({ from, to }) => from === "src/publish/sinks.ts" && folderOf(to) !== undefined)
    .map(({ to }) => to)
    .sort();
  assert.deepEqual(
    registered,
    folders.map((folder) => `src/publish/${folder}/sink.ts`),
  );
  const list = /export const SINKS[^=]*=\s*\[([^\]]*)\]/.exec(registry)?.[1];
  assert.ok(list !== undefined, "sinks.ts declares SINKS as one array literal");
  const lines = list
    .split("\n")
    .map((line) => line.replace(/\/\/.*$/, "").trim())
    .filter((line) => line !== "");
  assert.equal(lines.length, folders.length, "one line per sink");
  assert.equal(SINKS.length, folders.length);
  assert.deepEqual(SINKS.map((factory) => factory.name).sort(), folders);
});
