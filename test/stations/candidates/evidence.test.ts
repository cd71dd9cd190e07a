import assert from "node:assert/strict";
import { test } from "node:test";
import type { BundleSummary, OfflineEval } from "../../../src/publish/candidates.js";
import {
  buildEvidence,
  gatesOf,
  HISTOGRAM_BINS,
  histogram,
} from "../../../src/stations/candidates/evidence.js";
import type { ShadowPair } from "../../../src/stations/candidates/shadow-db.js";
import { testConfig } from "../../helpers/config.js";

const GATES = testConfig().candidates.gates;

const summary = (version: string, threshold: number): BundleSummary => ({
  model_version: version,
  student_sha256: `sha-${version}`,
  created_at: "2026-12-07T00:00:00.000Z",
  threshold,
  predicted_false_alarm_rate: 0.1,
});

function pair(seq: number, live: [number, string], candidate: [number, string], liveModel = "L"): ShadowPair {
  return {
    seq,
    capture_ts: Date.UTC(2026, 11, 7) + seq,
    live_score: live[0],
    live_verdict: live[1],
    live_threshold: 1,
    live_model: liveModel,
    candidate_score: candidate[0],
    candidate_verdict: candidate[1],
    candidate_threshold: 2,
    candidate_model: "C",
    image: seq === 2 ? "img2" : null,
  };
}

const labelled = (live: number, candidate: number, falseAlarms: number): OfflineEval => ({
  data_dir: "/labelled/cam",
  defects: 4,
  normals: 6,
  evaluated_at: "2026-12-07T00:00:00.000Z",
  live: { caught: live, false_alarms: 1 },
  candidate: { caught: candidate, false_alarms: falseAlarms },
});

test("the evidence counts agreements and disagreements of the pairs judged by the two named bundles only", () => {
  const pairs = [
    pair(1, [0.5, "ok"], [1, "ok"]),
    pair(2, [1.5, "defect"], [1, "ok"]),
    pair(3, [0.5, "ok"], [3, "defect"]),
    pair(4, [1.5, "defect"], [3, "defect"]),
    pair(5, [0.2, "ok"], [0.2, "ok"]),
    pair(6, [5, "defect"], [0.1, "ok"], "an older live model"),
  ];
  const report = buildEvidence({
    camera: "cam",
    now: Date.UTC(2026, 11, 7, 6),
    live: summary("L", 1),
    candidate: summary("C", 2),
    pairs,
    labelled: labelled(3, 4, 0),
    gates: { ...GATES, min_shadow_frames: 5, max_false_alarms_on_normals: 0 },
    imageUrl: (f) => `/img/${f}`,
  });
  const shadow = report.shadow!;
  assert.equal(shadow.frames, 5);
  assert.equal(shadow.live_alarms, 2);
  assert.equal(shadow.candidate_alarms, 2);
  assert.equal(shadow.both_alarm, 1);
  assert.equal(shadow.live_only, 1);
  assert.equal(shadow.candidate_only, 1);
  assert.equal(shadow.live_alarm_rate, 0.4);
  assert.deepEqual(
    shadow.disagreements_kept.map((d) => [d.seq, d.frame, d.live_map, d.candidate_map]),
    [[2, "/img/img2-frame.png", "/img/img2-live.png", "/img/img2-candidate.png"]],
  );
  assert.equal(shadow.disagreements_not_kept, 1);
  assert.equal(report.generated_at, "2026-12-07T06:00:00.000Z");
  assert.deepEqual(
    report.gates.map((g) => [g.name, g.pass]),
    [
      ["recall_at_least_live", true],
      ["alarm_rate_at_most_live", true],
      ["min_shadow_frames", true],
      ["max_false_alarms_on_normals", true],
    ],
  );
  assert.match(report.gates[2]!.detail, /1 more judged beside another live model/);
  assert.equal(report.promotable, true);
});

test("gates: fail, cannot tell (null, not promotable while enforced), and not enforced", () => {
  const shadow = (frames: number, live: number, candidate: number) =>
    buildEvidence({
      camera: "cam",
      now: 0,
      live: summary("L", 1),
      candidate: summary("C", 1),
      pairs: Array.from({ length: frames }, (_, i) =>
        pair(i, [0, i < live ? "defect" : "ok"], [0, i < candidate ? "defect" : "ok"]),
      ),
      labelled: null,
      gates: GATES,
      imageUrl: (f) => f,
    }).shadow;
  const failing = gatesOf(GATES, shadow(300, 3, 4), labelled(3, 2, 5));
  assert.deepEqual(
    failing.map((g) => [g.name, g.pass]),
    [
      ["recall_at_least_live", false],
      ["alarm_rate_at_most_live", false],
      ["min_shadow_frames", true],
    ],
  );
  assert.match(failing[0]!.detail, /candidate catches 2\/4 confirmed defects, live 3\/4/);
  const unknown = gatesOf({ ...GATES, max_false_alarms_on_normals: 1 }, null, null);
  assert.deepEqual(
    unknown.map((g) => [g.name, g.pass]),
    [
      ["recall_at_least_live", null],
      ["alarm_rate_at_most_live", null],
      ["min_shadow_frames", false],
      ["max_false_alarms_on_normals", null],
    ],
  );
  const report = (enforce: boolean, min: number) =>
    buildEvidence({
      camera: "cam",
      now: 0,
      live: summary("L", 1),
      candidate: summary("C", 1),
      pairs: null,
      labelled: null,
      gates: {
        ...GATES,
        enforce,
        min_shadow_frames: min,
        recall_at_least_live: false,
        alarm_rate_at_most_live: false,
      },
      imageUrl: (f) => f,
    });
  assert.equal(report(true, 0).promotable, true);
  assert.equal(report(true, 0).shadow, null);
  assert.equal(report(true, 1).promotable, false);
  assert.equal(report(false, 1).promotable, true);
});

test("histogram: shared edges from 0 to the larger of 2 and the highest ratio; every finite ratio binned once", () => {
  const h = histogram([0.05, 0.5, 1, 1.99, -1, Number.NaN], [3, 0.1, Number.POSITIVE_INFINITY]);
  assert.equal(h.edges.length, HISTOGRAM_BINS + 1);
  assert.equal(h.edges[0], 0);
  assert.equal(h.edges.at(-1), 3);
  assert.equal(
    h.live.reduce((a, b) => a + b),
    5,
  );
  assert.equal(
    h.candidate.reduce((a, b) => a + b),
    2,
  );
  assert.equal(h.candidate[HISTOGRAM_BINS - 1], 1, "the highest ratio falls in the last bin");
  assert.equal(h.live[0], 2, "0.05 and the negative ratio fall in the first bin");
  const low = histogram([0.1], [0.2]);
  assert.equal(low.edges.at(-1), 2);
  assert.equal(low.live[1], 1);
  assert.equal(low.candidate[2], 1);
});
