import type { CandidatesConfig } from "../../config/index.js";
import { jsonTime } from "../../core/time.js";
import type {
  BundleSummary,
  Disagreement,
  EvidenceReport,
  Gate,
  OfflineEval,
} from "../../publish/candidates.js";
import { isAlarm, type ShadowPair } from "./shadow-db.js";

/** Bins of the score histogram (scores over each model's own threshold). */
export const HISTOGRAM_BINS = 20;

export interface EvidenceInput {
  camera: string;
  now: number;
  live: BundleSummary;
  candidate: BundleSummary;
  /** The shadow's pairs in the order judged; null when no shadow ever ran for this candidate. */
  pairs: readonly ShadowPair[] | null;
  labelled: OfflineEval | null;
  gates: CandidatesConfig["gates"];
  /** The URL of a file under the shadow's `images/`. */
  imageUrl: (file: string) => string;
}

/**
 * The comparison of live and candidate. Shadow numbers count only the pairs judged by these two bundles: a pair
 * whose live model was another (the live bundle was swapped while the shadow ran) compares the candidate with a
 * model the report does not name, so it is left out and counted in the shadow gate's detail.
 */
export function buildEvidence(input: EvidenceInput): EvidenceReport {
  const { live, candidate } = input;
  const all = input.pairs;
  const pairs = all?.filter(
    (p) => p.live_model === live.model_version && p.candidate_model === candidate.model_version,
  );
  const leftOut = all && pairs ? all.length - pairs.length : 0;
  const shadow = pairs ? shadowNumbers(pairs, input.imageUrl) : null;
  const gates = gatesOf(input.gates, shadow, input.labelled, leftOut);
  const enforced = input.gates.enforce;
  return {
    camera: input.camera,
    generated_at: jsonTime(input.now),
    live,
    candidate,
    shadow,
    labelled: input.labelled,
    gates,
    promotable: !enforced || gates.every((g) => g.pass === true),
  };
}

type ShadowNumbers = NonNullable<EvidenceReport["shadow"]>;

function shadowNumbers(pairs: readonly ShadowPair[], imageUrl: (file: string) => string): ShadowNumbers {
  let liveAlarms = 0;
  let candidateAlarms = 0;
  let both = 0;
  let liveOnly = 0;
  let candidateOnly = 0;
  const kept: Disagreement[] = [];
  for (const p of pairs) {
    const l = isAlarm(p.live_verdict);
    const c = isAlarm(p.candidate_verdict);
    if (l) liveAlarms += 1;
    if (c) candidateAlarms += 1;
    if (l && c) both += 1;
    if (l && !c) liveOnly += 1;
    if (c && !l) candidateOnly += 1;
    if (l !== c && p.image !== null) {
      kept.push({
        seq: p.seq,
        capture_ts: jsonTime(p.capture_ts),
        live_score: p.live_score,
        candidate_score: p.candidate_score,
        live_verdict: p.live_verdict,
        candidate_verdict: p.candidate_verdict,
        frame: imageUrl(`${p.image}-frame.png`),
        live_map: imageUrl(`${p.image}-live.png`),
        candidate_map: imageUrl(`${p.image}-candidate.png`),
      });
    }
  }
  const frames = pairs.length;
  return {
    frames,
    live_alarms: liveAlarms,
    candidate_alarms: candidateAlarms,
    live_alarm_rate: frames > 0 ? liveAlarms / frames : 0,
    candidate_alarm_rate: frames > 0 ? candidateAlarms / frames : 0,
    both_alarm: both,
    live_only: liveOnly,
    candidate_only: candidateOnly,
    disagreements_kept: kept,
    disagreements_not_kept: liveOnly + candidateOnly - kept.length,
    histogram: histogram(
      pairs.map((p) => p.live_score / p.live_threshold),
      pairs.map((p) => p.candidate_score / p.candidate_threshold),
    ),
  };
}

/**
 * Both models' scores over their own thresholds (1 = at the threshold), binned on the same edges: from 0 to the
 * larger of 2 and the highest ratio, in {@link HISTOGRAM_BINS} equal bins; a ratio below 0 falls in the first, the
 * highest in the last. Ratios that are not finite (an error verdict, a threshold of 0) are not binned.
 */
export function histogram(
  live: readonly number[],
  candidate: readonly number[],
): { edges: number[]; live: number[]; candidate: number[] } {
  const finite = [...live, ...candidate].filter(Number.isFinite);
  const top = Math.max(2, ...finite);
  const width = top / HISTOGRAM_BINS;
  const edges = Array.from({ length: HISTOGRAM_BINS + 1 }, (_, i) =>
    i === HISTOGRAM_BINS ? top : i * width,
  );
  const bin = (values: readonly number[]): number[] => {
    const counts = new Array<number>(HISTOGRAM_BINS).fill(0);
    for (const v of values) {
      if (!Number.isFinite(v)) continue;
      const i = Math.min(HISTOGRAM_BINS - 1, Math.max(0, Math.floor(v / width)));
      counts[i]! += 1;
    }
    return counts;
  };
  return { edges, live: bin(live), candidate: bin(candidate) };
}

/**
 * The configured gates, each pass/fail, or null when the evidence cannot tell yet (no shadow frames, no labelled
 * defects or normals). A gate that cannot be told does not pass: promotion then needs `force`.
 */
export function gatesOf(
  config: CandidatesConfig["gates"],
  shadow: ShadowNumbers | null,
  labelled: OfflineEval | null,
  leftOut = 0,
): Gate[] {
  const gates: Gate[] = [];
  if (config.recall_at_least_live) {
    gates.push(
      !labelled || labelled.defects === 0
        ? { name: "recall_at_least_live", pass: null, detail: "no confirmed defects in the labelled set" }
        : {
            name: "recall_at_least_live",
            pass: labelled.candidate.caught >= labelled.live.caught,
            detail: `candidate catches ${labelled.candidate.caught}/${labelled.defects} confirmed defects, live ${labelled.live.caught}/${labelled.defects}`,
          },
    );
  }
  if (config.alarm_rate_at_most_live) {
    gates.push(
      !shadow || shadow.frames === 0
        ? { name: "alarm_rate_at_most_live", pass: null, detail: "no shadow frames yet" }
        : {
            name: "alarm_rate_at_most_live",
            pass: shadow.candidate_alarms <= shadow.live_alarms,
            detail: `on ${shadow.frames} shadow frames the candidate alarms on ${shadow.candidate_alarms} (${pct(shadow.candidate_alarm_rate)}), live on ${shadow.live_alarms} (${pct(shadow.live_alarm_rate)})`,
          },
    );
  }
  const frames = shadow?.frames ?? 0;
  const other = leftOut > 0 ? `; ${leftOut} more judged beside another live model are not counted` : "";
  gates.push({
    name: "min_shadow_frames",
    pass: frames >= config.min_shadow_frames,
    detail: `${frames} shadow frames of at least ${config.min_shadow_frames}${other}`,
  });
  const most = config.max_false_alarms_on_normals;
  if (most !== undefined) {
    gates.push(
      !labelled || labelled.normals === 0
        ? {
            name: "max_false_alarms_on_normals",
            pass: null,
            detail: "no confirmed normals in the labelled set",
          }
        : {
            name: "max_false_alarms_on_normals",
            pass: labelled.candidate.false_alarms <= most,
            detail: `candidate flags ${labelled.candidate.false_alarms}/${labelled.normals} confirmed normals (at most ${most}), live ${labelled.live.false_alarms}`,
          },
    );
  }
  return gates;
}

function pct(rate: number): string {
  return `${Number((rate * 100).toPrecision(3))} %`;
}
