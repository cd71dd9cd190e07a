/**
 * What the OPC 40100 view's result store holds in memory: the heap a full {@link RESULT_STORE} of records adds
 * (after a forced GC on both sides), each record made from a TestLineControl result with a part id, as the view
 * makes one per triggered part. The results themselves exist before the store; what is counted is the records, their
 * Dates and id strings, and the store's index.
 *
 * Run: node --expose-gc dist/benchmarks/opcua-result-store.js [--runs 5]
 * Writes benchmarks/results/opcua-result-store.json and .md.
 */
import { parseArgs } from "node:util";
import { RESULT_STORE, ResultStore, resultRecord } from "../src/publish/opcua/machine-vision-results.js";
import { TestLineControl } from "../test/helpers/line-control.js";
import { fmt, machineInfo, median, writeResults } from "./common.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run node with --expose-gc");

function heapAfterGc(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

/** Heap bytes a full store adds over the results it is made from. */
function storeBytes(): number {
  const control = new TestLineControl(["cam1", "cam2"]);
  const results = Array.from({ length: RESULT_STORE }, (_, i) => {
    const camera = i % 2 === 0 ? "cam1" : "cam2";
    control.trigger(camera, `PART-2026-12-07-${String(i).padStart(6, "0")}`, { via: "opcua" });
    return control.emit(camera, 0.1);
  });
  const before = heapAfterGc();
  const store = new ResultStore();
  for (const [i, result] of results.entries()) store.add(resultRecord(result, i + 1));
  const bytes = heapAfterGc() - before;
  if (store.size !== RESULT_STORE) throw new Error(`the store holds ${store.size}, not ${RESULT_STORE}`);
  return bytes;
}

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" } } });
const runs = Array.from({ length: Number(values.runs) }, storeBytes);
const perRecord = runs.map((bytes) => bytes / RESULT_STORE);
const report = {
  benchmark: "heap of a full OPC 40100 result store",
  machine: machineInfo(),
  records: RESULT_STORE,
  runs_bytes: runs,
  median_bytes: median(runs),
  median_bytes_per_record: median(perRecord),
};
const markdown = [
  "# OPC 40100 result store: heap of a full store",
  "",
  `${RESULT_STORE} records (node --expose-gc, heap after GC before and after filling the store), ${runs.length} runs.`,
  "",
  `Median ${fmt(median(runs) / 1e6, 2)} MB, ${fmt(median(perRecord), 0)} bytes a record (runs: ${perRecord.map((b) => fmt(b, 0)).join(", ")}).`,
  "",
].join("\n");
await writeResults("opcua-result-store", report, markdown);
process.stdout.write(markdown);
