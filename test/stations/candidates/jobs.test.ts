import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle } from "../../../src/bundle/bundle.js";
import { ownProcessTag } from "../../../src/core/process-identity.js";
import type { JobView, OfflineEval } from "../../../src/publish/candidates.js";
import { RetrainJobs, retrainOptions } from "../../../src/stations/candidates/jobs.js";
import { CandidateStore } from "../../../src/stations/candidates/store.js";
import { withTmpfs } from "../../helpers/tmpfs.js";
import { candidateWorld } from "./fixtures.js";

async function sha(dir: string): Promise<string> {
  return (await loadBundle(dir)).manifest.student.sha256;
}

test("a retrain job writes the camera's candidate (never the live bundle), job.json and offline-eval.json", async () => {
  const w = await candidateWorld(8);
  const liveSha = await sha(w.live);
  const seen: JobView[] = [];
  const jobs = new RetrainJobs(w.store, w.settings, w.logger, { changed: (j) => seen.push(j) });
  const first = await jobs.start("cam1", w.live, "test:alice");
  assert.equal(first.state, "running");
  assert.equal(first.frames, 8);
  assert.equal(first.epochs, 2);
  const end = await jobs.finished();
  assert.equal(end?.state, "done", end?.message);
  const p = w.store.paths("cam1");
  const candidate = await loadBundle(p.candidate);
  assert.equal(end?.candidate_model_version, candidate.manifest.model_version);
  // the candidate keeps the live bundle's geometry and teacher, and was trained with the job's one thread
  assert.equal(candidate.manifest.input.width, 32);
  assert.equal(candidate.manifest.teacher.sha256, (await loadBundle(w.live)).manifest.teacher.sha256);
  assert.equal(candidate.manifest.training.threads, 1);
  assert.equal(await sha(w.live), liveSha, "the live bundle is untouched");
  const stored = JSON.parse(await readFile(p.job, "utf8")) as JobView;
  assert.equal(stored.state, "done");
  assert.equal(stored.by, "test:alice");
  assert.equal(stored.epoch, candidate.manifest.training.epochs_run);
  assert.ok(stored.loss !== null && stored.loss > 0 && Number.isFinite(stored.loss));
  assert.ok(stored.val_score !== null && Number.isFinite(stored.val_score));
  assert.equal(stored.eta_s, null);
  assert.ok(!("pid" in stored) && !("owner" in stored), "a finished job names no process");
  // one view per epoch between the start and the end, epochs counting up
  const epochs = seen.filter((j) => j.state === "running" && j.epoch > 0).map((j) => j.epoch);
  assert.deepEqual(epochs, [1, 2].slice(0, epochs.length));
  assert.ok(epochs.length >= 1);
  const offline = JSON.parse(await readFile(p.offlineEval, "utf8")) as OfflineEval;
  assert.equal(offline.defects, 2);
  assert.equal(offline.normals, 3);
  for (const side of [offline.live, offline.candidate]) {
    assert.ok(side.caught >= 0 && side.caught <= 2);
    assert.ok(side.false_alarms >= 0 && side.false_alarms <= 3);
  }
  assert.equal(existsSync(path.join(w.store.dir, "retrain.lock")), false, "the lock is released");
});

test("one job at a time: a second start is refused naming the running camera, also from another store object", async () => {
  const w = await candidateWorld(8);
  await w.jobs.start("cam1", w.live, "test:a");
  try {
    await assert.rejects(w.jobs.start("cam1", w.live, "test:b"), /already running for camera cam1/);
    // another process's view of the node: the same lock file
    const other = new RetrainJobs(new CandidateStore(w.store.dir), w.settings, w.logger);
    await assert.rejects(
      other.start("cam2", w.live, "test:b"),
      /already running for camera cam1 \(process \d+\)/,
    );
  } finally {
    await w.jobs.cancel("cam1", "test:a");
  }
});

test("too few frames: refused naming the folder and its count", async () => {
  const w = await candidateWorld(2);
  await assert.rejects(
    w.jobs.start("cam1", w.live, "test:a"),
    (err: Error) =>
      err.message.includes(path.join(w.root, "collection/cam1")) && /has 2 frame\(s\)/.test(err.message),
  );
  assert.equal(existsSync(path.join(w.store.dir, "retrain.lock")), false);
});

test("the child runs niced; cancel: it stops, the job is cancelled naming who, no candidate is left", async () => {
  const w = await candidateWorld(8, { epochs: 50 });
  await w.jobs.start("cam1", w.live, "test:a");
  const pid = w.store.readJob("cam1")?.pid;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // field 19 is the nice value; fields counted after the command name's closing parenthesis start at field 3
  assert.equal(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16], "10", "candidates.retrain.nice");
  const end = await w.jobs.cancel("cam1", "http:bob");
  assert.equal(end.state, "cancelled");
  assert.equal(end.message, "cancelled by http:bob");
  assert.equal(existsSync(w.store.paths("cam1").candidate), false);
  assert.equal(w.store.readJob("cam1")?.state, "cancelled");
  assert.equal(w.jobs.running(), undefined);
});

test("the child SIGKILLed: failed naming the signal, live bundle untouched, no half candidate", async () => {
  const w = await candidateWorld(8, { epochs: 50 });
  const liveSha = await sha(w.live);
  await w.jobs.start("cam1", w.live, "test:a");
  const pid = w.store.readJob("cam1")?.pid;
  assert.ok(pid);
  process.kill(pid, "SIGKILL");
  const end = await w.jobs.finished();
  assert.equal(end?.state, "failed");
  assert.match(end?.message ?? "", /was killed by SIGKILL/);
  assert.equal(await sha(w.live), liveSha);
  const left = await readdir(w.store.paths("cam1").root);
  assert.deepEqual(
    left.filter((n) => n.startsWith("candidate")),
    [],
  );
});

test("a full disk while writing the candidate: failed with 'disk full writing <candidate>'", async (t) => {
  await withTmpfs(t, "24k", async (mount) => {
    const w = await candidateWorld(8);
    const store = new CandidateStore(path.join(mount, "candidates"));
    const jobs = new RetrainJobs(store, w.settings, w.logger);
    await jobs.start("cam1", w.live, "test:a");
    const end = await jobs.finished();
    assert.equal(end?.state, "failed", JSON.stringify(end));
    assert.equal(end?.message, `disk full writing ${store.paths("cam1").candidate}`);
    const left = await readdir(store.paths("cam1").root);
    assert.deepEqual(
      left.filter((n) => n.startsWith("candidate")),
      [],
    );
    assert.equal(store.readJob("cam1")?.state, "failed");
  });
});

test("restart: a job.json left running by a process that is gone becomes interrupted; a live owner's stays", async () => {
  const w = await candidateWorld(0);
  const base = {
    state: "running" as const,
    started_at: new Date().toISOString(),
    by: "test:a",
    epoch: 1,
    epochs: 2,
    loss: 1,
    val_score: 1,
    eta_s: 5,
    frames: 8,
  };
  await w.store.writeJob({ ...base, camera: "cam1", owner: "999999999.1", pid: 999999999 });
  await w.store.writeJob({ ...base, camera: "cam2", owner: await ownProcessTag(), pid: process.pid });
  const marked = await w.jobs.recover(["cam1", "cam2"]);
  assert.deepEqual(
    marked.map((j) => [j.camera, j.state]),
    [["cam1", "interrupted"]],
  );
  assert.match(w.store.readJob("cam1")?.message ?? "", /process that ran it \(999999999\) stopped/);
  assert.equal(w.store.readJob("cam2")?.state, "running");
});

test("a job's options come from the live bundle: no ROI (frames are stored cropped), tiles scaled to the capture", async () => {
  const w = await candidateWorld(0);
  const manifest = (await loadBundle(w.live)).manifest;
  const tiled = {
    ...manifest,
    geometry: {
      mode: "tile" as const,
      input: { width: 64, height: 64 },
      capture: { width: 400, height: 200 },
      source: { width: 800, height: 400 },
      roi: { x: 10, y: 20, width: 800, height: 400 },
      tile: { size: 64, overlap: 16 },
      scale: 0.5,
      margin: 8,
    },
    score: { aggregation: "top_k_mean" as const, k: 0.01 },
  };
  // frames stored 1000 px wide: the scale that brings them to the 400-px capture is 0.4, not the bundle's 0.5
  const opts = retrainOptions(tiled, w.live, "/frames", "/out", { ...w.settings.retrain, epochs: 3 }, 1000);
  assert.equal(opts.roi, undefined);
  assert.deepEqual(opts.tile, { size: 64, overlap: 16, scale: 0.4 });
  assert.equal(opts.margin, 8);
  assert.equal(opts.partScore, "top_k_mean");
  assert.equal(opts.teacherFile, path.join(w.live, "teacher.onnx"));
  assert.deepEqual([opts.epochs, opts.minEpochs, opts.threads, opts.timeBudgetMin], [3, 3, 1, 5]);
  const resized = retrainOptions(manifest, w.live, "/frames", "/out", w.settings.retrain, 0);
  assert.deepEqual(
    [resized.imageSize, resized.tile, resized.roi],
    [{ width: 32, height: 32 }, undefined, undefined],
  );
});
