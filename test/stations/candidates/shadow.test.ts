import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import type { PartialConfig, StpmdConfig } from "../../../src/config/index.js";
import type { InspectionResult } from "../../../src/core/result.js";
import type { OfflineEval } from "../../../src/publish/candidates.js";
import { SHADOW_IMAGES, shadowed } from "../../../src/stations/candidates/shadow.js";
import { SHADOW_DB_FILE, ShadowDb } from "../../../src/stations/candidates/shadow-db.js";
import { candidatePaths } from "../../../src/stations/candidates/store.js";
import { StationRegistry } from "../../../src/stations/registry.js";
import { testConfig } from "../../helpers/config.js";
import { trainTinyBundle } from "../../helpers/daemon-process.js";
import { capturingLogger } from "../../helpers/logs.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

const CAMERA = "cam";
const source = (fps: number) => `videotestsrc is-live=true pattern=snow ! video/x-raw,framerate=${fps}/1`;

/**
 * A live bundle and a candidate (another seed) for camera `cam`, with the thresholds given (the manifest's threshold
 * is not hashed: a model that alarms on every frame or on none, its network untouched).
 */
async function station(
  prefix: string,
  thresholds: { live?: number; candidate?: number } = {},
  candidateSize = 64,
) {
  const work = await tempDir(prefix);
  const live = path.join(work, "live");
  const candidates = path.join(work, "candidates");
  const paths = candidatePaths(candidates, CAMERA);
  await trainTinyBundle(work, live, 1);
  await trainTinyBundle(work, paths.candidate, 2, candidateSize);
  await editManifest(live, (m) => {
    if (thresholds.live !== undefined) m.threshold = thresholds.live;
  });
  await editManifest(paths.candidate, (m) => {
    // model versions are creation times to the second: both bundles were trained within one
    m.model_version += "-candidate";
    if (thresholds.candidate !== undefined) m.threshold = thresholds.candidate;
  });
  return { work, live, candidates, paths };
}

async function editManifest(
  bundle: string,
  edit: (m: { threshold: number; model_version: string }) => void,
): Promise<void> {
  const file = path.join(bundle, "manifest.json");
  const manifest = JSON.parse(await readFile(file, "utf8")) as { threshold: number; model_version: string };
  edit(manifest);
  await writeFile(file, JSON.stringify(manifest));
}

function config(
  s: { live: string; candidates: string; work: string },
  fps: number,
  shadow: PartialConfig["candidates"] = {},
): StpmdConfig {
  return testConfig({
    model: { bundle: s.live, watch: false },
    inference: { max_batch: 4, max_wait_ms: 5, queue_size: 64 },
    cameras: [{ id: CAMERA, source: source(fps) }],
    mqtt: { outbox: { dir: path.join(s.work, "outbox") } },
    candidates: { dir: s.candidates, ...shadow },
  });
}

/**
 * A registry over `cfg` whose consumer (the sinks' side) collects every delivered result; with `shadow`, the
 * candidate's shadow starts before the camera does, so every frame is offered to it.
 */
async function running(cfg: StpmdConfig, shadow?: { candidate: string; shadow: string }) {
  const { logger, lines } = capturingLogger("info");
  const delivered: InspectionResult[] = [];
  const registry = new StationRegistry(cfg, logger, (batch) => delivered.push(...batch));
  await registry.open();
  if (shadow) {
    const view = await registry.shadows.start(CAMERA, shadow.candidate, shadow.shadow, cfg.candidates.shadow);
    assert.equal(view.state, "running");
    assert.equal(view.share, cfg.candidates.shadow.share);
  }
  registry.start();
  return { registry, delivered, lines };
}

async function shutdown(registry: StationRegistry): Promise<void> {
  registry.stopCapture();
  await registry.drain();
  await registry.close();
}

function readDb(shadowDir: string) {
  const db = new ShadowDb(path.join(shadowDir, SHADOW_DB_FILE), { readonly: true });
  try {
    return { meta: db.meta()!, pairs: db.pairs() };
  } finally {
    db.close();
  }
}

test("shadowed(): a share takes the same evenly spread frames on every run", () => {
  const take = (share: number, n: number) =>
    Array.from({ length: n }, (_, seq) => seq).filter((seq) => shadowed(seq, share));
  assert.deepEqual(take(0.1, 30), [9, 19, 29]);
  assert.equal(take(0.5, 40).length, 20);
  assert.equal(take(0.25, 400).length, 100);
  assert.equal(take(1, 17).length, 17);
  assert.equal(take(0.33, 300).length, 99);
});

test("shadow at 0.5: half the live frames are paired in shadow.db with the live scores delivered; the candidate's verdicts never reach the consumer; the report counts what was fed", async () => {
  // the live model alarms on no frame, the candidate on every one: every shadowed frame is a disagreement
  const s = await station("stpmd-shadow-", { live: 1e9, candidate: 1e-6 });
  const cfg = config(s, 20, { shadow: { share: 0.5, queue: 1000, disagreement_images: 3 } });
  const { registry, delivered } = await running(cfg, s.paths);
  try {
    await waitFor("40 live results", () => delivered.length >= 40);
  } finally {
    registry.stopCapture();
    await registry.drain();
  }
  const liveVersion = registry.manifestOf(registry.require(CAMERA))!.model_version;
  // the job's offline evaluation, beside the candidate: the report shows it and judges the labelled gates by it
  const offline: OfflineEval = {
    data_dir: path.join(s.work, "labelled", CAMERA),
    defects: 3,
    normals: 5,
    evaluated_at: "2026-12-07T05:00:00.000Z",
    live: { caught: 2, false_alarms: 1 },
    candidate: { caught: 3, false_alarms: 5 },
  };
  await writeFile(s.paths.offlineEval, JSON.stringify(offline));
  const report = (await registry.shadows.evidence(CAMERA))!;
  const view = registry.shadows.view(CAMERA)!;
  await registry.close();

  // every delivered result is the live model's: the candidate's never reach a sink
  assert.ok(delivered.every((r) => r.modelVersion === liveVersion));
  const fed = delivered.filter((r) => shadowed(r.frame.seq, 0.5));
  assert.ok(Math.abs(fed.length - delivered.length / 2) <= 1, `${fed.length} of ${delivered.length}`);

  const { meta, pairs } = readDb(s.paths.shadow);
  assert.equal(meta.dropped, 0);
  assert.deepEqual(
    pairs.map((p) => p.seq),
    fed.map((r) => r.frame.seq),
  );
  for (const [i, p] of pairs.entries()) {
    const live = fed[i]!;
    assert.equal(p.live_score, live.score);
    assert.equal(p.live_verdict, live.verdict);
    assert.equal(p.live_threshold, live.threshold);
    assert.equal(p.live_model, liveVersion);
    assert.equal(p.candidate_verdict, "defect");
    assert.notEqual(p.candidate_model, liveVersion);
    assert.equal(p.capture_ts, live.frame.captureTs);
  }

  // the report's numbers, counted again from the frames fed
  const liveAlarms = fed.filter((r) => r.verdict === "defect").length;
  assert.equal(liveAlarms, 0);
  const shadow = report.shadow!;
  assert.equal(shadow.frames, fed.length);
  assert.equal(shadow.live_alarms, liveAlarms);
  assert.equal(shadow.candidate_alarms, fed.length);
  assert.equal(shadow.both_alarm, liveAlarms);
  assert.equal(shadow.live_only, 0);
  assert.equal(shadow.candidate_only, fed.length - liveAlarms);
  assert.equal(shadow.live_alarm_rate, liveAlarms / fed.length);
  assert.equal(shadow.candidate_alarm_rate, 1);
  assert.equal(
    shadow.histogram.live.reduce((a, b) => a + b, 0),
    fed.length,
  );
  assert.equal(
    shadow.histogram.candidate.reduce((a, b) => a + b, 0),
    fed.length,
  );
  const disagreements = fed.length - liveAlarms;
  assert.equal(shadow.disagreements_kept.length, Math.min(3, disagreements));
  assert.equal(shadow.disagreements_not_kept, disagreements - shadow.disagreements_kept.length);
  for (const d of shadow.disagreements_kept) {
    for (const url of [d.frame, d.live_map, d.candidate_map]) {
      assert.match(url, new RegExp(`^/api/candidates/${CAMERA}/images/[^/]+\\.png$`));
      const name = path.basename(url);
      assert.equal(registry.shadows.imageFile(CAMERA, name), path.join(s.paths.shadow, SHADOW_IMAGES, name));
    }
  }
  for (const name of ["../shadow.db", "shadow.db", "1-2-frame.png/..", "1-2-frame.png"]) {
    assert.equal(registry.shadows.imageFile(CAMERA, name), undefined, name);
  }
  assert.equal(view.frames, fed.length);
  assert.equal(view.candidate_alarms, fed.length);
  assert.equal(view.live_alarms, liveAlarms);
  assert.equal(view.disagreements, disagreements);
  assert.equal(report.live.model_version, liveVersion);
  assert.equal(report.candidate.threshold, 1e-6);
  assert.equal(report.candidate.predicted_false_alarm_rate, 1);

  // the gates with the defaults: the candidate alarms more than live, and no labelled set is there yet
  const gate = (name: string) => report.gates.find((g) => g.name === name);
  assert.equal(gate("alarm_rate_at_most_live")?.pass, liveAlarms === fed.length);
  assert.equal(gate("recall_at_least_live")?.pass, true);
  assert.equal(gate("min_shadow_frames")?.pass, false);
  assert.equal(report.promotable, false);
  assert.deepEqual(report.labelled, offline);
});

test("shadow stops by itself at max_frames, exactly there, and says so in its record", async () => {
  const s = await station("stpmd-shadow-max-");
  const cfg = config(s, 20, { shadow: { share: 1, max_frames: 5, queue: 100 } });
  const { registry, delivered } = await running(cfg);
  try {
    await registry.shadows.start(CAMERA, s.paths.candidate, s.paths.shadow, cfg.candidates.shadow);
    await waitFor("the shadow stopped", () => registry.shadows.view(CAMERA)?.state === "stopped");
    const frames = delivered.length;
    await waitFor("more live results", () => delivered.length >= frames + 8);
  } finally {
    await shutdown(registry);
  }
  const view = registry.shadows.view(CAMERA)!;
  assert.equal(view.state, "stopped");
  assert.equal(view.stopped_reason, "max_frames");
  assert.equal(view.frames, 5);
  assert.ok(view.ended_at);
  assert.equal(readDb(s.paths.shadow).pairs.length, 5);
});

test("a restarted registry resumes the shadow from its record: same start time, frames counted on from the db", async () => {
  const s = await station("stpmd-shadow-resume-");
  const cfg = config(s, 20, { shadow: { share: 1, max_frames: 100_000, queue: 100 } });
  const first = await running(cfg);
  try {
    await first.registry.shadows.start(CAMERA, s.paths.candidate, s.paths.shadow, cfg.candidates.shadow);
    await waitFor("10 shadow frames", () => (first.registry.shadows.view(CAMERA)?.frames ?? 0) >= 10);
  } finally {
    await shutdown(first.registry);
  }
  const before = first.registry.shadows.view(CAMERA)!;
  assert.equal(before.state, "running", "a shutdown does not stop the run: the next start resumes it");

  const second = await running(cfg);
  try {
    await waitFor("the run resumed with more frames", () => {
      const v = second.registry.shadows.view(CAMERA);
      return v !== null && v.frames >= before.frames + 5 && v;
    });
    // start() on a resumed run answers with it
    const again = await second.registry.shadows.start(
      CAMERA,
      s.paths.candidate,
      s.paths.shadow,
      cfg.candidates.shadow,
    );
    assert.equal(again.started_at, before.started_at);
    assert.equal(again.ends_at, before.ends_at);
    assert.ok(second.lines.some((l) => /shadow of camera cam resumed/.test(l.msg)));
    await second.registry.shadows.stop(CAMERA, "requested by test");
  } finally {
    await shutdown(second.registry);
  }
  const after = second.registry.shadows.view(CAMERA)!;
  assert.equal(after.state, "stopped");
  assert.equal(after.stopped_reason, "requested by test");
  assert.equal(readDb(s.paths.shadow).pairs.length, after.frames);
});

test("a candidate too slow for the frame rate drops shadow frames (counted), never live ones", async () => {
  // a 384² candidate takes many times the live 64² model's time per frame, on one ORT thread: at 120 frames/s it
  // cannot keep up even on an idle box (at 30 frames/s an idle box's candidate kept up, and nothing was dropped)
  const s = await station("stpmd-shadow-slow-", {}, 384);
  const cfg = config(s, 120, { shadow: { share: 1, queue: 2 } });
  const { registry, delivered } = await running(cfg, s.paths);
  try {
    await waitFor("shadow frames dropped", () => (registry.shadows.view(CAMERA)?.dropped ?? 0) >= 10, 30_000);
    await waitFor("240 live results", () => delivered.length >= 240);
  } finally {
    await shutdown(registry);
  }
  const view = registry.shadows.view(CAMERA)!;
  assert.equal(registry.droppedFrames, 0, "no live frame was dropped");
  // every live result was offered (share 1): judged, or dropped and counted
  assert.equal(view.frames + view.dropped, delivered.length);
  assert.ok(view.frames > 0);
});

test("shadow stops by itself at max_hours, counted from its first start", async () => {
  const s = await station("stpmd-shadow-hours-");
  // 1.8 s
  const cfg = config(s, 20, { shadow: { share: 1, max_hours: 0.0005, queue: 100 } });
  const { registry } = await running(cfg, s.paths);
  try {
    const view = registry.shadows.view(CAMERA)!;
    assert.equal(Date.parse(view.ends_at) - Date.parse(view.started_at), 1800);
    await waitFor("the shadow stopped", () => registry.shadows.view(CAMERA)?.state === "stopped");
  } finally {
    await shutdown(registry);
  }
  const view = registry.shadows.view(CAMERA)!;
  assert.equal(view.stopped_reason, "max_hours");
  assert.ok(view.frames > 0);
  assert.ok(Date.parse(view.ended_at!) >= Date.parse(view.ends_at));
});

test("a live bundle swapped during shadow: each pair keeps the live model that judged it, the report compares only the live model in force; a disabled camera's shadow waits for frames", async () => {
  const s = await station("stpmd-shadow-swap-");
  const cfg = config(s, 20, { shadow: { share: 1, queue: 100 } });
  const { registry, delivered } = await running(cfg, s.paths);
  const oldVersion = registry.manifestOf(registry.require(CAMERA))!.model_version;
  try {
    await waitFor("10 shadow frames", () => (registry.shadows.view(CAMERA)?.frames ?? 0) >= 10);
    await editManifest(s.live, (m) => {
      m.model_version += "-swapped";
    });
    assert.deepEqual((await registry.reloadModels("test")).swapped, [s.live]);
    const swappedAt = delivered.length;
    await waitFor("10 frames of the new live model", () => delivered.length >= swappedAt + 10);
    await registry.setEnabled(CAMERA, false);
    await registry.shadows.idle();
    const stopped = registry.shadows.view(CAMERA)!;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(registry.shadows.view(CAMERA)!.frames, stopped.frames, "no frames, no shadow frames");
    assert.equal(stopped.state, "running");
  } finally {
    await shutdown(registry);
  }
  const { pairs } = readDb(s.paths.shadow);
  const newVersion = `${oldVersion}-swapped`;
  const byOld = pairs.filter((p) => p.live_model === oldVersion).length;
  const byNew = pairs.filter((p) => p.live_model === newVersion).length;
  assert.ok(byOld >= 10 && byNew >= 1, `${byOld} pairs by the old live model, ${byNew} by the new`);
  assert.equal(byOld + byNew, pairs.length);
  const report = (await registry.shadows.evidence(CAMERA))!;
  assert.equal(report.live.model_version, newVersion);
  assert.equal(report.shadow!.frames, byNew);
  assert.match(report.gates.find((g) => g.name === "min_shadow_frames")!.detail, new RegExp(`${byOld} more`));
});

/** Niceness of each thread of this process (Linux: field 19 of /proc/self/task/<tid>/stat). */
function threadNiceness(): number[] {
  return readdirSync("/proc/self/task").flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // the fields after the command name, which is in parentheses and may hold spaces
      return [Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16])];
    } catch {
      return []; // the thread ended while listing
    }
  });
}

test("the candidate's inference runs on a thread at niceness 19, ended with the run", {
  skip: process.platform !== "linux",
}, async () => {
  const s = await station("stpmd-shadow-nice-");
  const cfg = config(s, 20, { shadow: { share: 1, queue: 100 } });
  const { registry } = await running(cfg, s.paths);
  try {
    assert.equal(threadNiceness().filter((n) => n === 19).length, 1);
    await registry.shadows.stop(CAMERA, "requested by test");
    await waitFor("the candidate's thread ended", () => !threadNiceness().includes(19));
  } finally {
    await shutdown(registry);
  }
});

test("a restart finds the candidate broken: the shadow is reported stopped, saying why, and live inspection goes on", async () => {
  const s = await station("stpmd-shadow-broken-");
  const cfg = config(s, 20, { shadow: { share: 1, queue: 100 } });
  const first = await running(cfg, s.paths);
  try {
    await waitFor("3 shadow frames", () => (first.registry.shadows.view(CAMERA)?.frames ?? 0) >= 3);
  } finally {
    await shutdown(first.registry);
  }
  const manifest = JSON.parse(await readFile(path.join(s.paths.candidate, "manifest.json"), "utf8")) as {
    student: { file: string };
  };
  await writeFile(path.join(s.paths.candidate, manifest.student.file), "not a model");
  const second = await running(cfg);
  try {
    const view = await waitFor("the run reported stopped", () => {
      const v = second.registry.shadows.view(CAMERA);
      return v?.state === "stopped" && v;
    });
    assert.match(
      view.stopped_reason!,
      /^not resumed after a restart: camera cam: the candidate .* does not load/,
    );
    assert.ok(view.frames >= 3, "the frames judged before are kept");
    const live = second.delivered.length;
    await waitFor("live results go on", () => second.delivered.length >= live + 5);
  } finally {
    await shutdown(second.registry);
  }
});
