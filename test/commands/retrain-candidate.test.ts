import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { loadBundle } from "../../src/bundle/bundle.js";
import { writeTinyBundle } from "../helpers/tiny-bundle.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";

/** A config file of one camera `cam` with a tiny live bundle and 8 collected frames. */
async function node(epochs: number): Promise<{ work: string; config: string; live: string }> {
  const work = await tempDir("stpmd-cli-cand-");
  const live = path.join(work, "model");
  await writeTinyBundle(live, "live-v1");
  await normalFrames(8, 32, path.join(work, "collection", "cam"));
  const config = path.join(work, "stpmd.yaml");
  await writeFile(
    config,
    stringify({
      model: { bundle: live },
      cameras: [{ id: "cam", source: "videotestsrc" }],
      mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, "state", "outbox") } },
      collection: { dir: path.join(work, "collection") },
      candidates: { retrain: { epochs, min_frames: 4 } },
    }),
  );
  return { work, config, live };
}

const STPMD = ["dist/src/main.cjs", "retrain", "--candidate", "--camera", "cam", "--config"];

test("stpmd retrain --candidate: the camera's job in the foreground, progress on the terminal, the candidate written", async () => {
  const { work, config, live } = await node(2);
  const r = spawnSync(process.execPath, [...STPMD, config], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /retrain job of camera cam: 8 frames, at most 2 epochs/);
  assert.match(r.stdout, /epoch 1\/2: loss [0-9.e+-]+, validation score/);
  const candidate = await loadBundle(path.join(work, "state", "candidates", "cam", "candidate"));
  assert.match(r.stdout, new RegExp(`candidate ${candidate.manifest.model_version} written to`));
  assert.equal((await loadBundle(live)).manifest.model_version, "live-v1", "the live bundle is untouched");
  const missing = spawnSync(
    process.execPath,
    ["dist/src/main.cjs", "retrain", "--candidate", "--config", config],
    {
      encoding: "utf8",
    },
  );
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /--candidate needs --camera <id> and --config <file>/);
  const plain = spawnSync(
    process.execPath,
    ["dist/src/main.cjs", "retrain", "--teacher", "t", "--out", "o"],
    {
      encoding: "utf8",
    },
  );
  assert.match(plain.stderr, /required option '--frames <dir>' not specified/);
});

test("stpmd retrain --candidate: Ctrl-C cancels the job cleanly (exit 1, job.json cancelled, no candidate)", async () => {
  const { work, config } = await node(200);
  const child = spawn(process.execPath, [...STPMD, config], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => {
    out += t;
  });
  let interrupted = false;
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on("data", () => {
      if (interrupted || !/epoch 1\//.test(out)) return;
      interrupted = true;
      child.kill("SIGINT");
    });
    child.on("exit", (c) => resolve(c));
  });
  assert.equal(code, 1, out);
  assert.match(out, /retrain job cancelled: cancelled by cli:/);
  const cam = path.join(work, "state", "candidates", "cam");
  assert.equal(JSON.parse(await readFile(path.join(cam, "job.json"), "utf8")).state, "cancelled");
  assert.deepEqual(
    (await readdir(cam)).filter((n) => n.startsWith("candidate")),
    [],
  );
});

test("stpmd retrain --candidate: a camera whose bundle another camera shares is refused in one line naming both", async () => {
  const { work, config, live } = await node(2);
  const cfg = await readFile(config, "utf8");
  await writeFile(
    config,
    cfg.replace(
      /cameras:\n {2}- id: cam\n {4}source: videotestsrc\n/,
      (c) => `${c}  - id: cam2\n    source: videotestsrc\n`,
    ),
  );
  const r = spawnSync(process.execPath, [...STPMD, config], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 1, r.stdout);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `--camera cam: camera cam's bundle ${live} is shared with camera\\(s\\) cam2; a candidate replaces one camera's bundle only`,
    ),
  );
  assert.deepEqual(
    await readdir(path.join(work, "state")).catch(() => []),
    [],
    "no job started, nothing written",
  );
});
