import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { before, describe, test } from "node:test";
import { loadBundle } from "../../src/bundle/bundle.js";
import { recoverStationBundles } from "../../src/daemon/startup-checks.js";
import { testConfig } from "../helpers/config.js";
import {
  nanWeights,
  replaySource,
  rewriteStudent,
  STPMD_BIN,
  trainTinyBundle,
} from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { freeLoopbackPort } from "../helpers/mosquitto.js";
import { killedWrite, writeTinyBundle } from "../helpers/tiny-bundle.js";
import { tempDir } from "../helpers/tiny-data.js";

/**
 * `check-config` and `run` agree: whatever `run` rejects at start, `check-config` rejects too, both exit 1 with one
 * problem line naming the key, and `run` does so within seconds instead of lingering with cameras restarting.
 */

const SIZE = 64;

function stpmd(
  args: string[],
  timeoutMs = 20_000,
): Promise<{ code: number | null; output: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [STPMD_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output, ms: Date.now() - started });
    });
  });
}

describe("start-up checks", () => {
  let work: string;
  let bundle: string;
  let port: number;

  before(async () => {
    work = await tempDir("stpmd-startup-");
    bundle = path.join(work, "model");
    await trainTinyBundle(work, bundle, 1, SIZE);
    await writeFile(path.join(work, "a-file"), "not a directory");
    port = await freeLoopbackPort(); // nothing listens: `run` must fail before it would matter
  });

  interface TestConfig {
    model: { bundle: string; watch: boolean };
    cameras: {
      id: string;
      source: string;
      restart_backoff?: Record<string, number>;
      roi?: Record<string, number>;
      ignore?: { polygons: number[][][] };
      model?: string;
    }[];
    mqtt: { url: string; outbox: { dir: string } };
    collection: { enabled?: boolean; dir: string };
    audit?: { file: string };
    health: { watchdog: boolean };
  }

  function config(patch: (c: TestConfig) => void): TestConfig {
    const c: TestConfig = {
      model: { bundle, watch: false },
      cameras: [{ id: "cam1", source: "videotestsrc is-live=true ! video/x-raw,framerate=5/1" }],
      mqtt: { url: `mqtt://127.0.0.1:${port}`, outbox: { dir: path.join(work, "outbox") } },
      collection: { dir: path.join(work, "collected") },
      health: { watchdog: false },
    };
    patch(c);
    return c;
  }

  async function bundleCopy(name: string, damage: (dir: string) => Promise<void>): Promise<string> {
    const dir = path.join(work, name);
    await cp(bundle, dir, { recursive: true });
    await damage(dir);
    return dir;
  }

  test("each fatal problem: check-config and run both exit 1 with one line naming it; run within seconds", async () => {
    const garbageWithHash = await bundleCopy("garbage", async (dir) => {
      const garbage = Buffer.from("this is not an ONNX model at all");
      await writeFile(path.join(dir, "student.onnx"), garbage);
      const manifestFile = path.join(dir, "manifest.json");
      const manifest = JSON.parse(await readFile(manifestFile, "utf8"));
      manifest.student.sha256 = createHash("sha256").update(garbage).digest("hex");
      await writeFile(manifestFile, JSON.stringify(manifest));
    });
    const truncated = await bundleCopy("truncated", async (dir) => {
      const student = await readFile(path.join(dir, "student.onnx"));
      await writeFile(path.join(dir, "student.onnx"), student.subarray(0, 1000));
    });
    const notJson = await bundleCopy("notjson", (dir) =>
      writeFile(path.join(dir, "manifest.json"), "{ nope"),
    );
    // every file checks (hashes, manifest, architecture); only scoring a frame shows it judges nothing
    const nanStudent = path.join(work, "nan-student");
    await rewriteStudent(bundle, nanStudent, "nan-student", nanWeights);
    const cases: [string, TestConfig, RegExp][] = [
      [
        "zero initial backoff",
        config((c) => {
          c.cameras[0]!.restart_backoff = { initial_ms: 0, max_ms: 1000, factor: 2 };
        }),
        /cameras\[0\] \(id "cam1"\)\.restart_backoff\.initial_ms: must be >= 1/,
      ],
      [
        "a source with its own appsink",
        config((c) => {
          c.cameras[0]!.source = "videotestsrc ! appsink name=sink";
        }),
        /cameras\[0\] \(id "cam1"\)\.source: must describe only the source/,
      ],
      [
        "a source GStreamer cannot build",
        config((c) => {
          c.cameras[0]!.source = "videotestsrc no-such-property=1";
        }),
        /cameras\[0\] \(id "cam1"\)\.source: GStreamer cannot build it: no property "no-such-property"/,
      ],
      [
        "a port out of range",
        config((c) => {
          c.mqtt.url = "mqtt://127.0.0.1:99999";
        }),
        /mqtt\.url: "mqtt:\/\/127\.0\.0\.1:99999" is not a valid URL/,
      ],
      [
        "a space in the host",
        config((c) => {
          c.mqtt.url = "mqtt://exa mple:1883";
        }),
        /mqtt\.url: "mqtt:\/\/exa mple:1883" is not a valid URL/,
      ],
      [
        "the outbox is a regular file",
        config((c) => {
          c.mqtt.outbox.dir = path.join(work, "a-file");
        }),
        /mqtt\.outbox\.dir: .*a-file is a regular file, not a directory/,
      ],
      [
        "collection below a regular file",
        config((c) => {
          c.collection = { enabled: true, dir: path.join(work, "a-file", "frames") };
        }),
        /collection\.dir: cannot create .*: .*a-file is a regular file, not a directory/,
      ],
      [
        "the audit log below a regular file",
        config((c) => {
          c.audit = { file: path.join(work, "a-file", "audit.jsonl") };
        }),
        /audit\.file: .*a-file is a regular file, not a directory/,
      ],
      [
        "a missing bundle",
        config((c) => {
          c.model.bundle = path.join(work, "missing");
        }),
        /not a model bundle: manifest\.json cannot be read/,
      ],
      [
        "a truncated student",
        config((c) => {
          c.model.bundle = truncated;
        }),
        /student ONNX student\.onnx is corrupt/,
      ],
      [
        "a garbage student with its hash fixed",
        config((c) => {
          c.model.bundle = garbageWithHash;
        }),
        /student ONNX student\.onnx does not parse/,
      ],
      [
        "an ROI outside the frame",
        config((c) => {
          c.cameras[0]!.source = "videotestsrc is-live=true ! video/x-raw,width=320,height=240";
          c.cameras[0]!.roi = { x: 200, y: 0, width: 200, height: 100 };
        }),
        /cameras\[0\] \(id "cam1"\)\.roi: ROI 200,0,200,100 does not fit inside the source's frames/,
      ],
      [
        "an ignore polygon with two points",
        config((c) => {
          c.cameras[0]!.ignore = {
            polygons: [
              [
                [0, 0],
                [5, 5],
              ],
            ],
          };
        }),
        /cameras\[0\] \(id "cam1"\)\.ignore\.polygons\[0\]: must list at least 3 items/,
      ],
      [
        "a second camera whose own model is missing",
        config((c) => {
          c.cameras.push({ id: "cam2", source: "videotestsrc", model: path.join(work, "missing2") });
        }),
        /cameras\[1\] \(id "cam2"\)\.model: .*missing2: not a model bundle/,
      ],
      [
        "a student with NaN weights, its hash fixed",
        config((c) => {
          c.model.bundle = nanStudent;
        }),
        /model\.bundle: .*nan-student: the model's output is not finite on a mid-grey probe frame \(the score is NaN, 4096 of 4096 map pixels are not finite\); bundle refused/,
      ],
      [
        "a manifest that is not JSON",
        config((c) => {
          c.model.bundle = notJson;
        }),
        /manifest\.json is not valid JSON/,
      ],
    ];
    for (const [name, cfg, expected] of cases) {
      const file = path.join(work, `${name.replaceAll(" ", "-")}.json`);
      await writeFile(file, JSON.stringify(cfg));
      const check = await stpmd(["check-config", file]);
      assert.equal(check.code, 1, `check-config, ${name}: ${check.output}`);
      assert.match(check.output, expected, `check-config, ${name}`);
      const run = await stpmd(["run", "--config", file]);
      assert.equal(run.code, 1, `run, ${name}: ${run.output}`);
      assert.match(run.output, expected, `run, ${name}`);
      assert.ok(run.ms < 10_000, `run, ${name}: exited after ${run.ms} ms`);
      for (const out of [check.output, run.output]) assert.doesNotMatch(out, /\n\s+at /, "no stack trace");
    }
  });

  test("a good config passes check-config with the replay camera and the bundle loaded", async () => {
    const file = path.join(work, "good.json");
    await writeFile(
      file,
      JSON.stringify(
        config((c) => {
          c.cameras[0]!.source = replaySource(path.join(work, "train-64"), 5);
        }),
      ),
    );
    const check = await stpmd(["check-config", file]);
    assert.equal(check.code, 0, check.output);
    assert.match(check.output, /cameras: +1 \(1 enabled\)/);
  });
});

test("the daemon's start puts back a station's bundle that a write killed between its renames left missing", async () => {
  const root = await tempDir();
  const shared = path.join(root, "model");
  const own = path.join(root, "line2");
  for (const dir of [shared, own]) {
    await writeTinyBundle(dir, "v1");
    await killedWrite(dir, "v2");
  }
  const config = testConfig({
    model: { bundle: shared },
    cameras: [
      { id: "a", source: "videotestsrc" },
      { id: "b", source: "videotestsrc", model: own },
    ],
  });
  const { logger, lines } = capturingLogger();
  await recoverStationBundles(config, logger);
  for (const dir of [shared, own]) assert.equal((await loadBundle(dir)).manifest.model_version, "v1");
  const warnings = lines.filter((l) => l.level === 40).map((l) => l.msg);
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.ok(warnings[0]!.startsWith(`bundle ${shared} was missing: a write by process`), warnings[0]);
  assert.ok(warnings[1]!.startsWith(`bundle ${own} was missing: a write by process`), warnings[1]);
});
