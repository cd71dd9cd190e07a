import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { type ImportEdge, importEdges } from "./helpers/imports.js";

/**
 * The layers of `src/`, lowest first. A file may import its own folder and any folder of a lower rank, never one of
 * the same rank or above: so the frame's path (capture → pipeline → publish) never couples its stages except
 * through the core types that flow down it, train and eval reuse the STPM core and the bundle but never the
 * running pipeline, and only the daemon wires stages together.
 */
export const LAYERS: Readonly<Record<string, number>> = {
  core: 0, // Frame, InspectionResult, Region, errors, logging, durable writes
  config: 1, // the one definition of the configuration, its loader and rules
  data: 2, // image and dataset files
  onnx: 2, // ONNX graph IR, shapes, ONNX Runtime sessions
  stpm: 3, // the method: normalisation, scoring graph and Scorer, regions, statistics, split, seeded random
  bundle: 4, // model bundles and teacher checks
  capture: 5, // GStreamer cameras
  pipeline: 5, // frame queue, inspector, inference thread
  // the outputs: the result-sink interface, its registry (one line per sink) and one folder per sink (mqtt,
  // sparkplug, opcua, http, collection); the line's control contract and commands; the shared MQTT session and
  // durable queue. The daemon drives every sink through the interface alone; only publish/sinks.ts reaches into a
  // sink folder (held by test/publish/sinks.test.ts).
  publish: 5,
  // train and eval sit beside the stages, not above them: they reuse stpm/ and bundle/, never the running pipeline
  train: 5, // retrain, training graph, int8 quantization
  eval: 5, // metrics and evaluation
  // the station registry: stations, model slots, loading and watching bundles, the frame's way through judging
  stations: 6,
  daemon: 7, // lifecycle, start-up checks, systemd
  demo: 8,
  commands: 9, // the CLI
  "": 10, // src/main.cts, the entry
};

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function layerOf(file: string): string {
  const parts = file.split("/");
  return parts.length > 2 ? parts[1]! : "";
}

/** The edges that break the layering, each as one readable line. */
export function violations(edges: readonly ImportEdge[]): string[] {
  const found: string[] = [];
  for (const { from, to } of edges) {
    const a = layerOf(from);
    const b = layerOf(to);
    const rankA = LAYERS[a];
    const rankB = LAYERS[b];
    if (rankA === undefined) found.push(`${from}: folder src/${a} has no layer (add it to LAYERS)`);
    else if (rankB === undefined) found.push(`${from} → ${to}: folder src/${b} has no layer`);
    else if (a !== b && rankB >= rankA) {
      found.push(`${from} → ${to}: ${a || "(entry)"} (layer ${rankA}) may not import ${b} (layer ${rankB})`);
    }
  }
  return found;
}

test("src/ imports point only downward through the layers", () => {
  const edges = importEdges();
  assert.ok(edges.length > 100, `found only ${edges.length} imports: the scanner is broken`);
  assert.deepEqual(violations(edges), []);
});

test("the check catches a forbidden edge (a stage importing another, a layer importing upward)", () => {
  assert.deepEqual(
    violations([
      { from: "src/capture/camera.ts", to: "src/publish/topics.ts" },
      { from: "src/stpm/scorer.ts", to: "src/pipeline/inspector.ts" },
      { from: "src/train/retrain.ts", to: "src/pipeline/inspector.ts" },
      { from: "src/pipeline/inspector.ts", to: "src/stpm/scorer.ts" },
      { from: "src/widgets/x.ts", to: "src/core/errors.ts" },
    ]),
    [
      "src/capture/camera.ts → src/publish/topics.ts: capture (layer 5) may not import publish (layer 5)",
      "src/stpm/scorer.ts → src/pipeline/inspector.ts: stpm (layer 3) may not import pipeline (layer 5)",
      "src/train/retrain.ts → src/pipeline/inspector.ts: train (layer 5) may not import pipeline (layer 5)",
      "src/widgets/x.ts: folder src/widgets has no layer (add it to LAYERS)",
    ],
  );
});

test("every folder of src/ has a layer, and test/ mirrors src/", () => {
  const srcFolders = readdirSync(path.join(repoRoot, "src"), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name);
  assert.deepEqual(
    srcFolders.filter((folder) => LAYERS[folder] === undefined),
    [],
  );
  // beside src/'s mirror: test helpers, the fault suite, and the tests of the top-level tools/, benchmarks/, deploy/ and docs/
  const testOnly = new Set(["helpers", "faults", "tools", "benchmarks", "deploy", "docs"]);
  const testFolders = readdirSync(path.join(repoRoot, "test"), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !testOnly.has(entry.name))
    .map((entry) => entry.name);
  assert.deepEqual(
    testFolders.filter((folder) => !srcFolders.includes(folder)),
    [],
  );
});

/** The layer table of docs/architecture.md as folder → rank (`src/main.cts` is the entry, "" in LAYERS). */
export function documentedLayers(markdown: string): Record<string, number> {
  const section = markdown.split(/^## /m).find((s) => s.startsWith("The layers"));
  assert.ok(section, "docs/architecture.md has no section 'The layers'");
  const layers: Record<string, number> = {};
  for (const row of section.matchAll(/^\| *(\d+) *\| *([^|]+)\|/gm)) {
    for (const name of row[2]!.matchAll(/`([^`]+)`/g)) {
      layers[name[1] === "src/main.cts" ? "" : name[1]!] = Number(row[1]);
    }
  }
  return layers;
}

test("docs/architecture.md's layer table is LAYERS", () => {
  const documented = documentedLayers(readFileSync(path.join(repoRoot, "docs/architecture.md"), "utf8"));
  assert.deepEqual(documented, { ...LAYERS });
});

test("a layer the docs leave out is found (the check above can fail)", () => {
  const table = "## The layers\n\n| rank | folders |\n|---:|---|\n| 0 | `core` |\n| 10 | `src/main.cts` |\n";
  assert.deepEqual(documentedLayers(table), { core: 0, "": 10 });
  assert.notDeepEqual(documentedLayers(table), { ...LAYERS });
});
