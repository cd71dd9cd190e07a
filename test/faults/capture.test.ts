import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { RestartMemory } from "../../benchmarks/camera-restarts.js";

const thisFile = fileURLToPath(import.meta.url);
/** dist/test/faults/capture.test.js → dist/benchmarks/camera-restarts.js */
const restartBenchmark = path.resolve(path.dirname(thisFile), "../../benchmarks/camera-restarts.js");

describe("Faults: a flapping camera", () => {
  test("200 restarts keep under 50 kB of RSS each (a pipeline built per restart kept 700 kB)", async () => {
    // In a child process of its own, with --expose-gc, so that only the camera's memory is counted and JS garbage
    // is collected before each reading. 640×480 scaled to 256×256 is the field's case (a model-size camera):
    // measured 700 kB per restart with a new pipeline per restart, 8 kB with the pipeline replayed.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        "--expose-gc",
        restartBenchmark,
        "--restarts",
        "200",
        "--warmup",
        "50",
        "--source",
        "videotestsrc num-buffers=5 ! video/x-raw,width=640,height=480",
        "--size",
        "256x256",
      ],
      { timeout: 60_000 },
    );
    const result = JSON.parse(stdout) as RestartMemory;
    assert.equal(result.restarts, 200);
    assert.ok(result.rssKbPerRestart < 50, `RSS growth ${result.rssKbPerRestart.toFixed(1)} kB per restart`);
    assert.equal(result.pipelines, 1, "restarts replay the camera's pipeline");
    assert.ok(
      result.heapKbPerRestart < 5,
      `JS heap growth ${result.heapKbPerRestart.toFixed(1)} kB per restart`,
    );
  });
});
