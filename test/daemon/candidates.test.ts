// End to end on real components: a replay camera judged by the daemon, a retrain job in its child process
// writing the camera's candidate, a promotion that swaps the model at a batch boundary without restarting the
// camera, a rollback, a broken candidate refused, and the audit log's entries with both bundles' sha256.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle, MANIFEST_FILE, type Manifest } from "../../src/bundle/bundle.js";
import type { PartialConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import type { Requester } from "../../src/publish/control.js";
import { auditEntries } from "../helpers/audit.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { normalFrames } from "../helpers/tiny-data.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");
const alice: Requester = { via: "http", user: "alice" };

/**
 * One replayed camera "cam" on the tiny bundle, records off, the audit log at `<work>/state/audit.jsonl`; `extra`'s
 * top-level sections are added (or replace these).
 */
function cameraDaemonConfig(work: string, bundle: string, noise: string, extra: PartialConfig = {}) {
  return testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam", source: replaySource(noise, 20) }],
    mqtt: { outbox: { dir: path.join(work, "state", "outbox") } },
    collection: { dir: path.join(work, "collection") },
    records: { enabled: false },
    audit: { file: path.join(work, "state", "audit.jsonl") },
    health: { watchdog: false },
    ...extra,
  });
}

test("retrain job → candidate → promote (next frames judged by it) → rollback; a broken candidate is refused", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-cand-daemon-");
  await normalFrames(8, 64, path.join(work, "collection", "cam"));
  const config = cameraDaemonConfig(work, bundle, noise, {
    candidates: { retrain: { epochs: 2, min_frames: 4, threads: 1 } },
  });
  const auditFile = config.audit.file;
  const results: InspectionResult[] = [];
  const daemon = new Daemon(config, logger, { sinks: [], hooks: { onResult: (r) => results.push(r) } });
  const live = (await loadBundle(bundle)).manifest;
  const judgedBy = (version: string, after: number) =>
    waitFor(`a frame judged by ${version}`, () =>
      results.slice(after).find((r) => r.modelVersion === version),
    );
  try {
    await daemon.start();
    await waitFor("a first frame", () => results.length > 0);

    const started = await daemon.control.startRetrain("cam", alice);
    assert.equal(started.state, "running");
    assert.equal(started.by, "http:alice");
    await assert.rejects(daemon.control.startRetrain("cam", alice), /already running for camera cam/);
    const job = await daemon.candidates.jobs.finished();
    assert.equal(job?.state, "done", job?.message);
    const view = daemon.snapshot().cameras[0]!.candidate;
    assert.equal(view?.candidate?.model_version, job?.candidate_model_version);
    assert.equal(view?.live?.model_version, live.model_version);
    assert.equal(view?.job?.state, "done");
    const candidateVersion = job!.candidate_model_version!;
    const candidateSha = (await loadBundle(daemon.candidates.store.paths("cam").candidate)).manifest.student
      .sha256;

    // promote: the camera keeps running, the frames after it are judged by the candidate
    const beforePromote = results.length;
    const restarts = daemon.snapshot().cameras[0]!.restarts;
    // no shadow frames and no labelled defects: the default gates cannot pass, so only a forced promotion goes
    await assert.rejects(
      daemon.control.promote("cam", alice),
      /does not pass the promotion gates \(.*min_shadow_frames: 0 shadow frames of at least 200\); promote with force/,
    );
    assert.equal(daemon.snapshot().cameras[0]!.model_version, live.model_version);
    const promoted = await daemon.control.promote("cam", alice, true);
    assert.equal(promoted.before?.model_version, live.model_version);
    assert.equal(promoted.after?.model_version, candidateVersion);
    assert.equal(daemon.snapshot().cameras[0]!.model_version, candidateVersion);
    await judgedBy(candidateVersion, beforePromote);
    assert.equal(daemon.snapshot().cameras[0]!.restarts, restarts, "the camera was not restarted");
    assert.equal(
      (await loadBundle(bundle)).manifest.student.sha256,
      candidateSha,
      "the candidate is the live bundle",
    );
    const afterPromote = daemon.snapshot().cameras[0]!.candidate;
    assert.equal(afterPromote?.candidate, null);
    assert.equal(afterPromote?.previous?.model_version, live.model_version);

    // rollback brings the old model back; the candidate becomes the previous one
    const beforeRollback = results.length;
    const rolled = await daemon.control.rollback("cam", alice);
    assert.equal(rolled.after?.model_version, live.model_version);
    await judgedBy(live.model_version, beforeRollback);
    assert.equal(daemon.snapshot().cameras[0]!.candidate?.previous?.model_version, candidateVersion);

    // a broken candidate (its student's bytes changed after the manifest was written) is refused, nothing moved
    const candidateDir = daemon.candidates.store.paths("cam").candidate;
    await cp(bundle, candidateDir, { recursive: true });
    const student = path.join(candidateDir, "student.onnx");
    const bytes = await readFile(student);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(student, bytes);
    // without force its evidence is read first, and refused in one line; with force, the load refuses it
    await assert.rejects(daemon.control.promote("cam", alice), (err: Error) => {
      assert.equal(err.name, "ControlError");
      assert.equal(err.message.split("\n").length, 1);
      assert.match(err.message, /^camera cam: (no evidence for its candidate|the candidate does not pass)/);
      return true;
    });
    await assert.rejects(
      daemon.control.promote("cam", alice, true),
      /candidate .* does not load, nothing was changed.*corrupt/,
    );
    assert.equal(daemon.snapshot().cameras[0]!.model_version, live.model_version);
    assert.equal((await loadBundle(bundle)).manifest.model_version, live.model_version);
    const afterRefusal = results.length;
    await waitFor("frames still judged", () => results.length > afterRefusal + 2);

    // discard deletes the candidate (with any shadow record and offline evaluation), the live model untouched
    const paths = daemon.candidates.store.paths("cam");
    const discardedSha = (
      JSON.parse(await readFile(path.join(candidateDir, MANIFEST_FILE), "utf8")) as Manifest
    ).student.sha256;
    const discarded = await daemon.control.discardCandidate("cam", alice);
    assert.equal(discarded.after, null);
    for (const gone of [paths.candidate, paths.shadow, paths.offlineEval])
      assert.equal(existsSync(gone), false, gone);
    assert.equal(daemon.snapshot().cameras[0]!.candidate?.candidate, null);
    assert.equal(daemon.snapshot().cameras[0]!.model_version, live.model_version);
    await assert.rejects(
      daemon.control.discardCandidate("cam", alice),
      /camera cam has no candidate to discard/,
    );

    const entries = await auditEntries(auditFile);
    const of = (action: string) => entries.filter((e) => e.action === action);
    assert.equal(of("retrain.start")[0]?.user, "alice");
    assert.equal(of("retrain.done")[0]?.user, "alice");
    assert.equal(of("retrain.start").filter((e) => e.outcome === "refused").length, 1);
    const promote = of("model.promote").find((e) => e.outcome === "ok");
    assert.equal(promote?.target, "force", "a forced promotion says so in the audit log");
    assert.deepEqual(promote?.before, {
      model_version: live.model_version,
      student_sha256: live.student.sha256,
    });
    assert.deepEqual(promote?.after, { model_version: candidateVersion, student_sha256: candidateSha });
    const rollback = of("model.rollback")[0];
    assert.deepEqual(rollback?.after, {
      model_version: live.model_version,
      student_sha256: live.student.sha256,
    });
    const refused = of("model.promote").filter((e) => e.outcome === "refused");
    assert.equal(refused.length, 3, "the ungated promote and the broken candidate's two");
    assert.match(refused[0]?.detail ?? "", /promotion gates/);
    assert.match(refused[2]?.detail ?? "", /does not load/);
    const discard = of("model.discard").find((e) => e.outcome === "ok");
    assert.equal(discard?.user, "alice");
    assert.equal((discard?.before as { student_sha256?: string } | undefined)?.student_sha256, discardedSha);
    assert.equal(discard?.after, null);
  } finally {
    await daemon.stop();
  }
});

test("a restart finds a job whose process is gone: interrupted, in status and the audit log; shadow and promote refused without a candidate", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-cand-restart-");
  const config = cameraDaemonConfig(work, bundle, noise);
  const auditFile = config.audit.file;
  const jobFile = path.join(config.candidates.dir, "cam", "job.json");
  await mkdir(path.dirname(jobFile), { recursive: true });
  await writeFile(
    jobFile,
    JSON.stringify({
      camera: "cam",
      state: "running",
      started_at: "2026-12-07T00:00:00.000Z",
      by: "mqtt:scada-1",
      epoch: 3,
      epochs: 50,
      loss: 1.5,
      val_score: 2,
      eta_s: 100,
      frames: 40,
      owner: "999999998.1",
      pid: 999999999,
    }),
  );
  const daemon = new Daemon(config, logger, { sinks: [] });
  try {
    await daemon.start();
    const job = daemon.snapshot().cameras[0]!.candidate?.job;
    assert.equal(job?.state, "interrupted");
    assert.equal(job?.epoch, 3);
    assert.match(job?.message ?? "", /process that ran it \(999999998\) stopped/);
    const failed = (await auditEntries(auditFile)).find((e) => e.action === "retrain.failed");
    assert.equal(failed?.camera, "cam");
    assert.match(failed?.detail ?? "", /stopped before it ended/);
    await assert.rejects(
      daemon.control.setShadow("cam", true, alice),
      /^ControlError: camera cam has no candidate to shadow$/,
    );
    await assert.rejects(daemon.control.promote("cam", alice), /camera cam has no candidate to promote/);
    await assert.rejects(daemon.control.startRetrain("cam9", alice), /there is no camera cam9/);
  } finally {
    await daemon.stop();
  }
});
