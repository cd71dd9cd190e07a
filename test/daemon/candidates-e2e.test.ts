/**
 * Issue 22's "Done means" end to end, as a line's SCADA and quality engineer run it over the daemon's real
 * interfaces: a replay camera (normal parts, then two noise frames the live model flags), a local mosquitto, the
 * part record on. The engineer labels two flagged frames "false alarm" through the console's HTTP API (logged in:
 * session cookie + CSRF); the SCADA starts the retrain with an MQTT 5 command (Response Topic, Correlation Data),
 * watches its progress in the status, starts the shadow with a Sparkplug DCMD, reads the evidence report and checks
 * it against the results it received itself and the shadow's record, promotes over MQTT (refused by the gates
 * first, then forced), sees the next frames judged by the candidate, rolls back with a Sparkplug DCMD. All the while
 * the camera publishes a result for every frame (every seq, no gap over GAP_MS) and the audit log has every step.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { loadBundle } from "../../src/bundle/bundle.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import { scoreSamples } from "../../src/eval/evaluate.js";
import type { CandidateView, EvidenceReport, JobView } from "../../src/publish/candidates.js";
import type { NodeSnapshot } from "../../src/publish/control.js";
import type { PartRecord } from "../../src/publish/records-api.js";
import { auditEntries } from "../helpers/audit.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { ConsoleOperator, continuity, getJson, ScadaMqtt, SparkplugHost } from "../helpers/scada.js";
import { normalFrames, replayFrames } from "../helpers/tiny-data.js";
import { TINY_SIZE } from "../helpers/tiny-mvtec.js";
import { waitFor } from "../helpers/wait.js";

const { logger } = capturingLogger();
/** A 2-epoch job on 64² frames takes seconds; the margin is for a loaded 2-core box with the child at nice 19. */
const JOB_MS = 180_000;
/**
 * The longest the SCADA may wait between two results of a 5 fps camera (200 ms apart) through a retrain, a
 * shadow, a promotion and a rollback: a hot swap holds one batch; 3 s leaves room for a loaded 2-core box.
 */
const GAP_MS = 3000;
const SHADOW_FRAMES = 20;

test("the candidate loop over MQTT 5, Sparkplug and HTTP: false alarms labelled, retrain, shadow, evidence checked against the frames, promote, roll back; live verdicts throughout", async () => {
  const { work, bundle } = await tinyStation("stpmd-cand-e2e-");
  const frames = await replayFrames(path.join(work, "replay"), 6);
  const dirs = {
    normal: path.join(work, "frames"),
    labelled: path.join(work, "labelled"),
    records: path.join(work, "records"),
    candidates: path.join(work, "candidates"),
  };
  // the camera's earlier collected normals (collection runs at most once a minute by default)
  await normalFrames(12, TINY_SIZE, path.join(dirs.normal, "cam1"));
  const passwordFile = path.join(work, "alice");
  await writeFile(passwordFile, "line7-quality\n", { mode: 0o600 });
  const auditFile = path.join(work, "audit.jsonl");
  const live = (await loadBundle(bundle)).manifest;

  const broker = await MosquittoBroker.start();
  const httpPort = await freeLoopbackPort();
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam1", source: replaySource(frames, 5) }],
    mqtt: {
      url: broker.url,
      client_id: "cand-e2e",
      snapshot: "none",
      result_qos: 1,
      commands: { enabled: true },
      outbox: { dir: path.join(work, "outbox") },
    },
    sparkplug: {
      enabled: true,
      group_id: "line7",
      edge_node_id: "stpmd-e2e",
      bdseq_file: path.join(work, "bdseq"),
      history: { dir: path.join(work, "history") },
      report_interval_ms: 200,
    },
    http: {
      enabled: true,
      port: httpPort,
      console: { users: [{ username: "alice", password_file: passwordFile }] },
    },
    records: { dir: dirs.records, labelled_dir: dirs.labelled },
    collection: { dir: dirs.normal },
    candidates: {
      dir: dirs.candidates,
      retrain: { epochs: 2, time_budget_min: 3, min_frames: 8 },
      shadow: { share: 1, max_frames: SHADOW_FRAMES, max_hours: 1 },
      gates: { min_shadow_frames: 10, enforce: true },
    },
    audit: { file: auditFile },
    health: { watchdog: false },
  });
  const base = `http://127.0.0.1:${httpPort}`;
  const scada = await ScadaMqtt.connect(broker.url, "scada-7");
  const host = await SparkplugHost.start(broker.url, "line7", "stpmd-e2e");
  const daemon = new Daemon(config, logger);
  const camView = async (): Promise<CandidateView> =>
    (await getJson<{ cameras: CandidateView[] }>(`${base}/api/candidates`)).cameras.find(
      (c) => c.camera === "cam1",
    )!;
  const status = async () =>
    (await scada.ok<NodeSnapshot>("status", {})).cameras.find((c) => c.id === "cam1")!;
  /** The camera's records in seq order (the record API answers newest first). */
  const records = async (): Promise<PartRecord[]> =>
    (await getJson<{ records: PartRecord[] }>(`${base}/api/records?camera=cam1&limit=1000`)).records.sort(
      (a, b) => a.seq - b.seq,
    );
  /** Whether the last three results the SCADA received after `seq` were judged by `version`. */
  const judgedBy = (version: string, seq: number): boolean => {
    const last = scada
      .resultsOf("cam1")
      .filter((r) => r.payload.seq > seq)
      .slice(-3);
    return last.length === 3 && last.every((r) => r.payload.model_version === version);
  };
  /** The last seq received when each step was asked for, to place a long gap. */
  const marks: Record<string, number | undefined> = {};
  const mark = (step: string) => {
    marks[step] = scada.resultsOf("cam1").at(-1)?.payload.seq;
  };
  try {
    await daemon.start();

    // two flagged frames labelled false alarms by a logged-in operator: they join the camera's normals
    const flagged = await waitFor(
      "two flagged frames in the record",
      async () => {
        const { records } = await getJson<{ records: PartRecord[] }>(
          `${base}/api/records?camera=cam1&verdict=defect`,
        );
        return records.length >= 2 ? records.slice(0, 2) : undefined;
      },
      30_000,
      200,
    );
    const alice = await ConsoleOperator.login(base, "alice", "line7-quality");
    for (const record of flagged) {
      const res = await alice.post(`/api/records/${record.id}/label`, { label: "false_alarm" });
      assert.equal(res.status, 200, `label ${record.id}: ${await res.text()}`);
    }
    const normals = await readdir(path.join(dirs.normal, "cam1"));
    assert.equal(normals.filter((f) => f.endsWith("_false-alarm.png")).length, 2, normals.join(", "));

    // the retrain, started by the SCADA over MQTT 5 request/response; its progress in the status
    mark("retrain");
    const started = await scada.ok<JobView>("retrain", { camera: "cam1" });
    assert.equal(started.state, "running");
    // MQTT does not tell a subscriber who published: the broker's ACL decides who may (src/publish/mqtt/commands.ts)
    assert.equal(started.by, "mqtt");
    const epochsSeen = new Set<number>();
    const job = await waitFor(
      "the job's end in the status",
      async () => {
        const j = (await status()).candidate?.job;
        if (j?.state === "running") epochsSeen.add(j.epoch);
        return j !== undefined && j !== null && j.state !== "running" ? j : undefined;
      },
      JOB_MS,
      100,
    );
    assert.equal(job.state, "done", job.message);
    assert.ok(epochsSeen.size > 0, "the status showed the job running");
    assert.equal(job.epochs, 2);
    assert.equal(job.frames, 14, "12 collected normals and the 2 false alarms");
    assert.ok(job.loss !== null && Number.isFinite(job.loss), `loss ${job.loss}`);
    const candidateVersion = job.candidate_model_version!;
    assert.notEqual(candidateVersion, live.model_version);
    const candidateSha = (await loadBundle(path.join(dirs.candidates, "cam1", "candidate"))).manifest.student
      .sha256;
    assert.equal((await camView()).live?.model_version, live.model_version, "a retrain never touches live");
    // the SCADA saw the job run: its state and epochs in the camera's Sparkplug data
    await waitFor("Model/Job State done in DDATA", () => host.latest("cam1", "Model/Job State") === "done");
    const states = host.values("cam1", "Model/Job State");
    assert.ok(states.includes("running"), `Model/Job State values ${JSON.stringify(states)}`);
    assert.equal(host.latest("cam1", "Model/Job Epoch"), job.epoch);
    await waitFor("Model/Candidate Version in DDATA", () =>
      host.latest("cam1", "Model/Candidate Version") === candidateVersion ? true : undefined,
    );

    // shadow, started by the Sparkplug host; it stops by itself at max_frames
    mark("shadow");
    await host.dcmd("cam1", [{ name: "Model/Shadow", type: "Boolean", value: true }]);
    await waitFor(
      "the shadow running",
      async () => (await camView()).shadow?.state === "running",
      10_000,
      100,
    );
    const shadow = await waitFor(
      "the shadow stopped",
      async () => {
        const s = (await camView()).shadow;
        return s?.state === "stopped" ? s : undefined;
      },
      60_000,
      200,
    );
    assert.equal(shadow.frames, SHADOW_FRAMES);
    assert.equal(shadow.stopped_reason, "max_frames");

    // the evidence, checked against the results the SCADA received and the shadow's own record
    const report = await getJson<EvidenceReport>(`${base}/api/candidates/cam1/report`);
    const db = new Database(path.join(dirs.candidates, "cam1", "shadow", "shadow.db"), { readonly: true });
    const pairs = db
      .prepare(
        "SELECT seq, live_verdict, candidate_verdict, candidate_score, live_model, candidate_model FROM pairs ORDER BY seq",
      )
      .all() as {
      seq: number;
      live_verdict: string;
      candidate_verdict: string;
      candidate_score: number;
      live_model: string;
      candidate_model: string;
    }[];
    db.close();
    assert.equal(pairs.length, SHADOW_FRAMES);
    const received = new Map(scada.resultsOf("cam1").map((r) => [r.payload.seq, r.payload]));
    let liveAlarms = 0;
    let candidateAlarms = 0;
    let both = 0;
    for (const pair of pairs) {
      const published = received.get(pair.seq);
      assert.ok(published !== undefined, `the shadowed frame ${pair.seq} was published live`);
      assert.equal(pair.live_verdict, published.verdict, `frame ${pair.seq}: the live verdict the SCADA got`);
      assert.equal(pair.live_model, live.model_version);
      assert.equal(pair.candidate_model, candidateVersion);
      const l = published.verdict === "defect";
      const c = pair.candidate_verdict === "defect";
      liveAlarms += l ? 1 : 0;
      candidateAlarms += c ? 1 : 0;
      both += l && c ? 1 : 0;
    }
    if (shadow.dropped === 0) {
      // share 1 and nothing dropped: the shadowed frames are consecutive
      assert.equal(pairs.at(-1)!.seq - pairs[0]!.seq, SHADOW_FRAMES - 1);
    }
    assert.ok(liveAlarms > 0, "the replay's noise frames were among the shadowed ones");

    // the candidate's alarms again, independently: the replay's files scored offline by both bundles (the
    // evaluation's scoring); a shadowed frame is the file whose live score the SCADA received for it
    const replay = (await readdir(frames)).sort().map((f) => ({
      file: path.join(frames, f),
      kind: "replay",
      label: 0 as const,
      maskFile: undefined,
    }));
    const offlineLive = (await scoreSamples(bundle, replay, logger)).scores;
    const offlineCandidate = (
      await scoreSamples(path.join(dirs.candidates, "cam1", "candidate"), replay, logger)
    ).scores;
    // the daemon and the evaluation agree to ~1e-7 here; two of the replay's parts score 5e-4 apart live
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));
    let offlineCandidateAlarms = 0;
    for (const pair of pairs) {
      const score = received.get(pair.seq)!.score!;
      const matches = offlineLive.flatMap((s, i) => (close(s, score) ? [i] : []));
      assert.equal(
        matches.length,
        1,
        `frame ${pair.seq}: live score ${score}, replay's ${offlineLive.join(", ")}`,
      );
      const file = matches[0]!;
      assert.ok(
        close(pair.candidate_score, offlineCandidate[file]!),
        `frame ${pair.seq} (${replay[file]!.file}): candidate ${pair.candidate_score} in shadow, ${offlineCandidate[file]} offline`,
      );
      if (offlineCandidate[file]! > report.candidate.threshold) offlineCandidateAlarms += 1;
    }
    assert.equal(offlineCandidateAlarms, candidateAlarms, "the shadow's candidate verdicts, scored offline");
    const s = report.shadow!;
    assert.equal(s.frames, SHADOW_FRAMES);
    assert.equal(s.live_alarms, liveAlarms);
    assert.equal(s.candidate_alarms, candidateAlarms);
    assert.equal(s.both_alarm, both);
    assert.equal(s.live_only, liveAlarms - both);
    assert.equal(s.candidate_only, candidateAlarms - both);
    assert.equal(s.live_alarm_rate, liveAlarms / SHADOW_FRAMES);
    assert.equal(s.candidate_alarm_rate, candidateAlarms / SHADOW_FRAMES);
    assert.equal(s.disagreements_kept.length + s.disagreements_not_kept, s.live_only + s.candidate_only);
    assert.equal(
      s.histogram.live.reduce((a, b) => a + b, 0),
      SHADOW_FRAMES,
      "every live score binned",
    );
    assert.equal(report.candidate.student_sha256, candidateSha);
    assert.equal(report.live.student_sha256, live.student.sha256);
    // the labelled set holds the two false alarms as confirmed normals and no defect: recall cannot be told
    assert.equal(report.labelled?.normals, 2);
    assert.equal(report.labelled?.defects, 0);
    assert.equal(report.promotable, false, JSON.stringify(report.gates));

    // promote over MQTT: refused by the gates, then forced; the next frames are judged by the candidate
    assert.match(await scada.refused("promote", { camera: "cam1" }), /promotion gates.*promote with force/);
    assert.equal((await status()).model_version, live.model_version, "a refused promote changes nothing");
    const restarts = (await status()).restarts;
    const beforePromote = scada.resultsOf("cam1").at(-1)!.payload.seq;
    mark("promote");
    const promoted = await scada.ok<{ before: { model_version: string }; after: { model_version: string } }>(
      "promote",
      { camera: "cam1", force: true },
    );
    assert.equal(promoted.before.model_version, live.model_version);
    assert.equal(promoted.after.model_version, candidateVersion);
    await waitFor(
      "frames after the promote judged by the candidate",
      () => judgedBy(candidateVersion, beforePromote),
      20_000,
      200,
    );
    assert.equal((await status()).model_version, candidateVersion);
    assert.equal((await status()).restarts, restarts, "the camera was not restarted");
    await waitFor("Model Version in Sparkplug DDATA", () =>
      host.latest("cam1", "Model Version") === candidateVersion ? true : undefined,
    );

    // roll back from the Sparkplug host: the old model judges again
    const beforeRollback = scada.resultsOf("cam1").at(-1)!.payload.seq;
    mark("rollback");
    await host.dcmd("cam1", [{ name: "Model/Rollback", type: "Boolean", value: true }]);
    await waitFor(
      "frames after the rollback judged by the live model again",
      () => judgedBy(live.model_version, beforeRollback),
      20_000,
      200,
    );
    assert.equal((await status()).model_version, live.model_version);
    assert.equal((await camView()).previous?.model_version, candidateVersion, "the rollback can be undone");
    assert.equal((await loadBundle(bundle)).manifest.student.sha256, live.student.sha256);

    // model by frame, as the SCADA received it: the live model, from a batch boundary after the promote the
    // candidate, from one after the rollback the live model again; the record and every defect event agree
    const byFrame = [...scada.resultsOf("cam1")].sort((a, b) => a.payload.seq - b.payload.seq);
    const runs: { version: string; from: number }[] = [];
    for (const { payload } of byFrame)
      if (runs.at(-1)?.version !== payload.model_version)
        runs.push({ version: payload.model_version, from: payload.seq });
    assert.deepEqual(
      runs.map((r) => r.version),
      [live.model_version, candidateVersion, live.model_version],
      JSON.stringify(runs),
    );
    assert.ok(runs[1]!.from > beforePromote && runs[2]!.from > beforeRollback, JSON.stringify(runs));
    const recorded = new Map((await records()).map((r) => [r.seq, r.model_version]));
    for (const { payload } of byFrame) {
      if (recorded.has(payload.seq))
        assert.equal(payload.model_version, recorded.get(payload.seq), `record of frame ${payload.seq}`);
    }
    const versionOf = new Map(byFrame.map((r) => [r.payload.seq, r.payload.model_version]));
    for (const d of scada.defects.get("cam1") ?? []) {
      // an event may arrive after the last result the test looked at
      if (versionOf.has(d.seq))
        assert.equal(d.model_version, versionOf.get(d.seq), `defect event of frame ${d.seq}`);
    }

    // live verdicts throughout: every seq from the first result to the last, no gap over GAP_MS
    const flow = continuity(scada.resultsOf("cam1"));
    assert.deepEqual(flow.missing, [], "every frame's result reached the SCADA");
    assert.equal(flow.duplicates, 0);
    assert.ok(flow.maxGapMs < GAP_MS, `longest gap between results ${flow.maxGapMs} ms`);
    console.log(
      `# results seq ${flow.first}..${flow.last}, longest gap ${flow.maxGapMs} ms before seq ${flow.maxGapSeq}; ` +
        `steps at seq ${JSON.stringify(marks)}; epochs seen running in status ${[...epochsSeen].join(",")}; shadow live ${liveAlarms}/${SHADOW_FRAMES} candidate ${candidateAlarms}/${SHADOW_FRAMES}`,
    );

    // every step audited, with who; promote and rollback with both bundles' sha256
    const entries = await auditEntries(auditFile);
    const find = (action: string, outcome: "ok" | "refused" = "ok") =>
      entries.filter((e) => e.action === action && e.outcome === outcome);
    assert.equal(find("label").length, 2);
    assert.ok(find("label").every((e) => e.user === "alice" && e.via === "http"));
    assert.deepEqual(
      find("retrain.start").map((e) => [e.via, e.user, e.camera]),
      [["mqtt", null, "cam1"]],
    );
    assert.equal(find("retrain.done")[0]?.via, "mqtt", "the job's end in the name of who started it");
    assert.deepEqual(
      find("shadow.start").map((e) => [e.via, e.camera]),
      [["sparkplug", "cam1"]],
    );
    const liveBundle = { model_version: live.model_version, student_sha256: live.student.sha256 };
    const candBundle = { model_version: candidateVersion, student_sha256: candidateSha };
    const refusedPromote = find("model.promote", "refused");
    assert.equal(refusedPromote.length, 1);
    assert.equal(refusedPromote[0]?.via, "mqtt");
    assert.match(refusedPromote[0]?.detail ?? "", /promotion gates/);
    const promote = find("model.promote")[0];
    assert.equal(promote?.via, "mqtt");
    assert.equal(promote?.target, "force");
    assert.deepEqual(promote?.before, liveBundle);
    assert.deepEqual(promote?.after, candBundle);
    const rollback = find("model.rollback")[0];
    assert.equal(rollback?.via, "sparkplug");
    assert.deepEqual(rollback?.before, candBundle);
    assert.deepEqual(rollback?.after, liveBundle);
    assert.ok(existsSync(path.join(dirs.candidates, "cam1", "previous")));
  } finally {
    await daemon.stop();
    await host.close();
    await scada.close();
    await broker.stop();
  }
});
