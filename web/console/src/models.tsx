/**
 * Models (issue 22): per camera, the live model, its candidate and the previous one; the retrain job (start,
 * progress with a loss curve, cancel); the candidate's shadow run (start, stop, progress); the evidence that
 * compares the two (alarm rates on the same frames, both score histograms, the labelled set, the gates, the frames
 * where they disagree with both heatmaps); promote, roll back and discard, each confirmed naming both models.
 * The page polls every 2 s while a job or a shadow run is running anywhere, and not at all otherwise.
 */
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import {
  api,
  type BundleSummary,
  type CandidateView,
  type Disagreement,
  type EvidenceReport,
  type JobView,
  type ShadowView,
} from "./api.js";
import { errorText, fmt, percent, timeText } from "./format.js";
import { loadMap } from "./heatmap.js";
import { useShared } from "./shared.js";

const POLL_MS = 2000;
/** Hex digits of a sha256 shown: enough to tell bundles apart at a glance; the whole one is in the tooltip. */
const SHA_PREFIX = 12;

type Message = { text: string; ok: boolean };
type Act = (name: string, body: Record<string, unknown>, done: string) => Promise<void>;

function isRunning(view: Pick<CandidateView, "job" | "shadow">): boolean {
  return view.job?.state === "running" || view.shadow?.state === "running";
}

function durationText(seconds: number | null): string {
  if (seconds === null) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function shaText(sha: string) {
  return (
    <code title={`student sha256 ${sha}`} data-role="sha">
      {sha.slice(0, SHA_PREFIX)}
    </code>
  );
}

/** A bundle's predicted false-alarm rate, an upper bound ("≤ 2.5 %"), or "–" when it has none. */
function predictedText(rate: number | null): string {
  return rate === null ? "–" : `≤ ${percent(rate)}`;
}

/** "v3 (1a2b3c4d5e6f)": how a dialog names a bundle. */
function bundleName(b: BundleSummary | null): string {
  return b === null ? "none" : `${b.model_version} (${b.student_sha256.slice(0, SHA_PREFIX)})`;
}

function BundleFacts({
  which,
  bundle,
}: {
  which: "live" | "candidate" | "previous";
  bundle: BundleSummary | null;
}) {
  return (
    <>
      <dt>{which}</dt>
      <dd data-role={`${which}-model`}>
        {bundle === null ? (
          <span class="dim">none</span>
        ) : (
          <>
            <strong data-role="version">{bundle.model_version}</strong> {shaText(bundle.student_sha256)}
            <br />
            <span class="dim">
              threshold {fmt(bundle.threshold)} · false alarms{" "}
              {predictedText(bundle.predicted_false_alarm_rate)} · made {timeText(bundle.created_at)}
            </span>
          </>
        )}
      </dd>
    </>
  );
}

/**
 * The job's loss per epoch as the page saw it: the job reports only its latest epoch, so epochs that passed
 * between two polls are missing from the curve (never invented).
 */
function useLossCurve(job: JobView | null): [number, number][] {
  const [curve, setCurve] = useState<{ key: string; points: [number, number][] }>({ key: "", points: [] });
  const key = job === null ? "" : `${job.camera} ${job.started_at}`;
  const epoch = job?.epoch ?? 0;
  const loss = job?.loss ?? null;
  useEffect(() => {
    setCurve((old) => {
      const points = old.key === key ? old.points.filter(([e]) => e !== epoch) : [];
      if (loss !== null && epoch > 0) points.push([epoch, loss]);
      return { key, points };
    });
  }, [key, epoch, loss]);
  return curve.key === key ? curve.points : [];
}

function LossCurve({ points, epochs }: { points: [number, number][]; epochs: number }) {
  if (points.length < 2) return null;
  const losses = points.map(([, l]) => l);
  const low = Math.min(...losses);
  const span = Math.max(...losses) - low || 1;
  const xy = points
    .map(
      ([e, l]) =>
        `${((e / Math.max(epochs, 1)) * 100).toFixed(2)},${(38 - ((l - low) / span) * 36).toFixed(2)}`,
    )
    .join(" ");
  return (
    <svg
      class="curve"
      viewBox="0 0 100 40"
      preserveAspectRatio="none"
      role="img"
      aria-label={`training loss over ${points.length} epochs, from ${fmt(losses[0])} to ${fmt(losses.at(-1))}`}
      data-role="loss-curve"
    >
      <polyline points={xy} />
    </svg>
  );
}

function JobPanel({ view, writable, act }: { view: CandidateView; writable: boolean; act: Act }) {
  const job = view.job;
  const points = useLossCurve(job);
  const running = job?.state === "running";
  const camera = view.camera;
  const bad = job?.state === "failed" || job?.state === "interrupted";
  return (
    <section class="panel" aria-label={`${camera} retrain`}>
      <h4>
        Retrain{" "}
        <span
          class={`badge ${running ? "warn" : job?.state === "done" ? "ok" : bad ? "bad" : ""}`}
          data-role="job-state"
        >
          {job?.state ?? "never run"}
        </span>
      </h4>
      {job !== null && (
        <>
          <progress max={Math.max(job.epochs, 1)} value={job.epoch} aria-label="epochs done" />
          <p data-role="job-progress" aria-live="polite">
            epoch {job.epoch}/{job.epochs} · loss {fmt(job.loss)} · validation {fmt(job.val_score)}
            {running && ` · ETA ${durationText(job.eta_s)}`} · {job.frames} frames
          </p>
          <LossCurve points={points} epochs={job.epochs} />
          <p class="dim">
            started {timeText(job.started_at)} by {job.by}
            {job.ended_at !== undefined && `, ended ${timeText(job.ended_at)}`}
            {job.candidate_model_version !== undefined && `, wrote candidate ${job.candidate_model_version}`}
          </p>
          {job.message !== undefined && (
            <p class={`message ${bad ? "error" : ""}`} data-role="job-message">
              {job.state}: {job.message}
            </p>
          )}
        </>
      )}
      <div class="row">
        <button
          type="button"
          data-role="retrain"
          disabled={!writable || running}
          onClick={() => act("retrain", { camera }, "retrain started")}
        >
          Start retrain
        </button>
        <button
          type="button"
          data-role="cancel-retrain"
          disabled={!writable || !running}
          onClick={() => act("cancel_retrain", { camera }, "retrain cancelled")}
        >
          Cancel retrain
        </button>
      </div>
    </section>
  );
}

function ShadowPanel({ view, writable, act }: { view: CandidateView; writable: boolean; act: Act }) {
  const shadow: ShadowView | null = view.shadow;
  const running = shadow?.state === "running";
  const camera = view.camera;
  return (
    <section class="panel" aria-label={`${camera} shadow`}>
      <h4>
        Shadow{" "}
        <span class={`badge ${running ? "warn" : ""}`} data-role="shadow-state">
          {shadow?.state ?? "not run"}
        </span>
      </h4>
      {shadow !== null && (
        <>
          <progress max={Math.max(shadow.max_frames, 1)} value={shadow.frames} aria-label="shadow frames" />
          <p data-role="shadow-progress" aria-live="polite">
            {shadow.frames}/{shadow.max_frames} frames ({percent(shadow.share)} of live frames) · dropped{" "}
            {shadow.dropped}
            {running ? ` · ends by ${timeText(shadow.ends_at)}` : ""}
          </p>
          <p data-role="shadow-counts">
            alarms: live {shadow.live_alarms}, candidate {shadow.candidate_alarms} · disagreements{" "}
            {shadow.disagreements}
          </p>
          <p class="dim">
            started {timeText(shadow.started_at)}
            {shadow.ended_at !== undefined && `, stopped ${timeText(shadow.ended_at)}`}
            {shadow.stopped_reason !== undefined && ` (${shadow.stopped_reason})`}
          </p>
        </>
      )}
      <div class="row">
        <button
          type="button"
          data-role="shadow-start"
          disabled={!writable || running || view.candidate === null}
          title={view.candidate === null ? "no candidate to run in shadow" : undefined}
          onClick={() => act("shadow", { camera, enabled: true }, "shadow started")}
        >
          Start shadow
        </button>
        <button
          type="button"
          data-role="shadow-stop"
          disabled={!writable || !running}
          onClick={() => act("shadow", { camera, enabled: false }, "shadow stopped")}
        >
          Stop shadow
        </button>
      </div>
    </section>
  );
}

/** Both models' scores over their own thresholds, binned on shared edges; the dashed line is the threshold (1). */
function ScoreHistogram({ histogram }: { histogram: NonNullable<EvidenceReport["shadow"]>["histogram"] }) {
  const { edges, live, candidate } = histogram;
  const bins = Math.min(live.length, candidate.length);
  const low = edges[0];
  const high = edges.at(-1);
  if (bins === 0 || low === undefined || high === undefined || !(high > low))
    return <p class="dim">no scores to draw</p>;
  const most = Math.max(1, ...live, ...candidate);
  const x = (v: number) => ((v - low) / (high - low)) * 100;
  const one = Math.max(0, Math.min(100, x(1)));
  return (
    <figure class="histogram-figure">
      <svg
        class="histogram compare"
        viewBox="0 0 100 40"
        preserveAspectRatio="none"
        role="img"
        aria-label="score histogram of both models, scores divided by each model's threshold"
        data-role="score-histogram"
      >
        {Array.from({ length: bins }, (_, i) => {
          const left = x(edges[i] ?? low);
          const width = x(edges[i + 1] ?? high) - left;
          const h = (n: number) => (n / most) * 38;
          return (
            <g key={i}>
              <title>{`${fmt(edges[i], 3)}–${fmt(edges[i + 1], 3)}× threshold: live ${live[i]}, candidate ${candidate[i]}`}</title>
              <rect class="live" x={left} width={width * 0.45} y={40 - h(live[i]!)} height={h(live[i]!)} />
              <rect
                class="candidate"
                x={left + width * 0.45}
                width={width * 0.45}
                y={40 - h(candidate[i]!)}
                height={h(candidate[i]!)}
              />
            </g>
          );
        })}
        <line class="threshold" x1={one} x2={one} y1={0} y2={40} />
      </svg>
      <figcaption>
        <span class="swatch live" /> live <span class="swatch candidate" /> candidate · score ÷ own threshold,{" "}
        {fmt(low, 3)} to {fmt(high, 3)}; dashed line: the threshold (1)
      </figcaption>
    </figure>
  );
}

/** A frame with one model's map over it. */
function MapOverlay({ frame, map, caption }: { frame: string; map: string; caption: string }) {
  const heat = useRef<HTMLCanvasElement>(null);
  useEffect(() => (heat.current === null ? undefined : loadMap(heat.current, map)), [map]);
  return (
    <figure>
      <div class="overlay">
        <img src={frame} alt={caption} loading="lazy" />
        <canvas ref={heat} class="heat" />
      </div>
      <figcaption>{caption}</figcaption>
    </figure>
  );
}

type GalleryMode = "side" | "live" | "candidate";
/**
 * Disagreements shown at first, and added per "Show more": each is three PNGs and two painted canvases, and a run
 * keeps up to `candidates.shadow.disagreement_images` (200 by default), too many for a phone at once.
 */
const GALLERY_PAGE = 24;
const MODES: [GalleryMode, string][] = [
  ["side", "Side by side"],
  ["live", "Live map"],
  ["candidate", "Candidate map"],
];

function verdictText(verdict: string, score: number, threshold: number): string {
  return `${verdict} ${fmt(score)} (${(score / threshold).toFixed(2)}×)`;
}

function Gallery({ report }: { report: EvidenceReport }) {
  const [mode, setMode] = useState<GalleryMode>("side");
  const [shown, setShown] = useState(GALLERY_PAGE);
  const shadow = report.shadow;
  if (shadow === null) return null;
  const items = shadow.disagreements_kept;
  const one = (d: Disagreement) => (
    <li key={d.seq} data-seq={d.seq} class="disagreement">
      <div class={mode === "side" ? "pair" : "single"}>
        {mode !== "candidate" && (
          <MapOverlay frame={d.frame} map={d.live_map} caption={`frame ${d.seq}, live model's map`} />
        )}
        {mode !== "live" && (
          <MapOverlay frame={d.frame} map={d.candidate_map} caption={`frame ${d.seq}, candidate's map`} />
        )}
      </div>
      <p>
        frame {d.seq} · {timeText(d.capture_ts)}
        <br />
        live{" "}
        <span class={d.live_verdict === "ok" ? "" : "bad"}>
          {verdictText(d.live_verdict, d.live_score, report.live.threshold)}
        </span>
        <br />
        candidate{" "}
        <span class={d.candidate_verdict === "ok" ? "" : "bad"}>
          {verdictText(d.candidate_verdict, d.candidate_score, report.candidate.threshold)}
        </span>
      </p>
    </li>
  );
  return (
    <>
      <h5>Where they disagree</h5>
      {items.length === 0 ? (
        <p class="dim">no disagreement kept</p>
      ) : (
        <>
          <fieldset class="row modes">
            <legend class="dim">heatmaps</legend>
            {MODES.map(([m, label]) => (
              <button
                key={m}
                type="button"
                class={mode === m ? "current" : ""}
                aria-pressed={mode === m}
                data-role={`gallery-${m}`}
                onClick={() => setMode(m)}
              >
                {label}
              </button>
            ))}
          </fieldset>
          <ol class="gallery" data-role="gallery">
            {items.slice(0, shown).map(one)}
          </ol>
          {items.length > shown && (
            <button type="button" data-role="gallery-more" onClick={() => setShown((n) => n + GALLERY_PAGE)}>
              Show {Math.min(GALLERY_PAGE, items.length - shown)} more of {items.length - shown}
            </button>
          )}
        </>
      )}
      {shadow.disagreements_not_kept > 0 && (
        <p class="dim">and {shadow.disagreements_not_kept} more whose images were not kept</p>
      )}
    </>
  );
}

function rateText(n: number, of: number): string {
  return of === 0 ? `– (${n} of 0)` : `${percent(n / of)} (${n} of ${of})`;
}

function Evidence({ report }: { report: EvidenceReport }) {
  const s = report.shadow;
  const l = report.labelled;
  return (
    <section class="panel evidence" aria-label={`${report.camera} evidence`} data-role="evidence">
      <h4>
        Evidence <span class="dim">({timeText(report.generated_at)})</span>
      </h4>
      <table class="compare">
        <thead>
          <tr>
            <th />
            <th scope="col">live</th>
            <th scope="col">candidate</th>
          </tr>
        </thead>
        <tbody>
          <tr>
            <th scope="row">alarm rate on shadow frames</th>
            <td data-role="live-alarm-rate">{s === null ? "–" : rateText(s.live_alarms, s.frames)}</td>
            <td data-role="candidate-alarm-rate">
              {s === null ? "–" : rateText(s.candidate_alarms, s.frames)}
            </td>
          </tr>
          <tr>
            <th scope="row">recall on confirmed defects</th>
            <td data-role="live-recall">{l === null ? "–" : rateText(l.live.caught, l.defects)}</td>
            <td data-role="candidate-recall">{l === null ? "–" : rateText(l.candidate.caught, l.defects)}</td>
          </tr>
          <tr>
            <th scope="row">false alarms on confirmed normals</th>
            <td data-role="live-false-alarms">
              {l === null ? "–" : rateText(l.live.false_alarms, l.normals)}
            </td>
            <td data-role="candidate-false-alarms">
              {l === null ? "–" : rateText(l.candidate.false_alarms, l.normals)}
            </td>
          </tr>
          <tr>
            <th scope="row">threshold</th>
            <td>{fmt(report.live.threshold)}</td>
            <td>{fmt(report.candidate.threshold)}</td>
          </tr>
          <tr>
            <th scope="row">predicted false-alarm rate</th>
            <td>{predictedText(report.live.predicted_false_alarm_rate)}</td>
            <td>{predictedText(report.candidate.predicted_false_alarm_rate)}</td>
          </tr>
        </tbody>
      </table>
      {s === null ? (
        <p class="dim">no shadow frames yet: start shadow to compare the two on live frames</p>
      ) : (
        <p data-role="agreement">
          on {s.frames} frames: both alarm {s.both_alarm} · live only {s.live_only} · candidate only{" "}
          {s.candidate_only}
        </p>
      )}
      {l === null ? (
        <p class="dim">no labelled set evaluated</p>
      ) : (
        <p class="dim">
          labelled set {l.data_dir}: {l.defects} defects, {l.normals} normals, evaluated{" "}
          {timeText(l.evaluated_at)}
        </p>
      )}
      {s !== null && <ScoreHistogram histogram={s.histogram} />}
      <h5>Promotion gates</h5>
      {report.gates.length === 0 ? (
        <p class="dim">no gates configured</p>
      ) : (
        <ul class="gates" data-role="gates">
          {report.gates.map((g) => (
            <li key={g.name} data-gate={g.name}>
              <span class={`badge ${g.pass === null ? "" : g.pass ? "ok" : "bad"}`}>
                {g.pass === null ? "unknown" : g.pass ? "pass" : "fail"}
              </span>{" "}
              {g.name} <span class="dim">{g.detail}</span>
            </li>
          ))}
        </ul>
      )}
      <p data-role="promotable" class={report.promotable ? "" : "bad"}>
        {report.promotable
          ? "promotable: every enforced gate passes"
          : "an enforced gate fails: promotion needs force"}
      </p>
      <Gallery report={report} />
    </section>
  );
}

/** A modal dialog (focus kept inside, Escape cancels) asking to confirm one command. */
function Confirm({
  title,
  action,
  canConfirm,
  onConfirm,
  onClose,
  children,
}: {
  title: string;
  action: string;
  canConfirm: boolean;
  onConfirm: () => void;
  onClose: () => void;
  children: ComponentChildren;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = dialog.current;
    if (d !== null && !d.open) d.showModal();
  }, []);
  return (
    <dialog ref={dialog} class="confirm" aria-label={title} onClose={onClose} data-role="confirm-dialog">
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          dialog.current?.close();
          onConfirm();
        }}
      >
        <h3>{title}</h3>
        {children}
        <div class="row actions">
          <button type="button" autofocus data-role="confirm-cancel" onClick={() => dialog.current?.close()}>
            Cancel
          </button>
          <button type="submit" data-role="confirm-ok" disabled={!canConfirm}>
            {action}
          </button>
        </div>
      </form>
    </dialog>
  );
}

type Asking = "promote" | "rollback" | "discard";

function Actions({
  view,
  report,
  writable,
  act,
}: {
  view: CandidateView;
  report: EvidenceReport | string | null;
  writable: boolean;
  act: Act;
}) {
  const [asking, setAsking] = useState<Asking | null>(null);
  const [force, setForce] = useState(false);
  const { camera, live, candidate, previous } = view;
  const jobRunning = view.job?.state === "running";
  const evidence = typeof report === "object" ? report : null;
  // the force box appears when the evidence says an enforced gate fails (Promote then waits for it), or when there
  // is no evidence to tell (the daemon checks the gates itself and its refusal is shown)
  const needsForce = evidence === null || !evidence.promotable;
  const failing = evidence?.gates.filter((g) => g.pass !== true) ?? [];
  const close = () => {
    setAsking(null);
    setForce(false);
  };
  /** The button that opens `what`'s dialog, which needs the bundle it acts on (`needs`). */
  const askButton = (what: Asking, label: string, needs: BundleSummary | null) => (
    <button
      type="button"
      data-role={what}
      disabled={!writable || needs === null || jobRunning}
      onClick={() => setAsking(what)}
    >
      {label}
    </button>
  );
  return (
    <div class="row actions">
      {askButton("promote", "Promote…", candidate)}
      {askButton("rollback", "Roll back…", previous)}
      {askButton("discard", "Discard candidate…", candidate)}
      {asking === "promote" && (
        <Confirm
          title={`Promote on ${camera}`}
          action={force ? "Promote anyway" : "Promote"}
          canConfirm={evidence === null || evidence.promotable || force}
          onClose={close}
          onConfirm={() =>
            act("promote", { camera, ...(force ? { force: true } : {}) }, `promoted ${bundleName(candidate)}`)
          }
        >
          <p>
            Put candidate <strong data-role="confirm-new">{bundleName(candidate)}</strong> in service on{" "}
            {camera}, replacing live <strong data-role="confirm-old">{bundleName(live)}</strong>. The live
            model is kept: Roll back brings it back.
          </p>
          {needsForce && (
            <>
              {evidence === null ? (
                <p class="message error">
                  the evidence could not be loaded: the daemon checks the gates itself
                </p>
              ) : (
                <ul class="gates">
                  {failing.map((g) => (
                    <li key={g.name} class={g.pass === false ? "bad" : "dim"}>
                      {g.pass === false ? "fails" : "unknown"}: {g.name} ({g.detail})
                    </li>
                  ))}
                </ul>
              )}
              <label class="row check">
                <input
                  type="checkbox"
                  data-role="force"
                  checked={force}
                  onChange={(e) => setForce(e.currentTarget.checked)}
                />
                force: promote although an enforced gate fails
              </label>
            </>
          )}
        </Confirm>
      )}
      {asking === "rollback" && (
        <Confirm
          title={`Roll back ${camera}`}
          action="Roll back"
          canConfirm={true}
          onClose={close}
          onConfirm={() => act("rollback", { camera }, `rolled back to ${bundleName(previous)}`)}
        >
          <p>
            Put <strong data-role="confirm-new">{bundleName(previous)}</strong> back in service on {camera},
            replacing live <strong data-role="confirm-old">{bundleName(live)}</strong>, which is kept so that
            the rollback can itself be undone.
          </p>
        </Confirm>
      )}
      {asking === "discard" && (
        <Confirm
          title={`Discard the candidate of ${camera}`}
          action="Discard"
          canConfirm={true}
          onClose={close}
          onConfirm={() => act("discard_candidate", { camera }, `discarded ${bundleName(candidate)}`)}
        >
          <p>
            Delete candidate <strong data-role="confirm-new">{bundleName(candidate)}</strong>, its shadow run
            and its evidence. Live <strong data-role="confirm-old">{bundleName(live)}</strong> stays in
            service.
          </p>
        </Confirm>
      )}
    </div>
  );
}

/** The evidence of a camera's candidate, fetched again when the candidate or its shadow count changes. */
function useEvidence(view: CandidateView, commands: number): EvidenceReport | string | null {
  const [report, setReport] = useState<EvidenceReport | string | null>(null);
  const sha = view.candidate?.student_sha256;
  const frames = view.shadow?.frames;
  const state = view.shadow?.state;
  useEffect(() => {
    if (sha === undefined) {
      setReport(null);
      return;
    }
    let stale = false;
    api.evidence(view.camera).then(
      (r) => !stale && setReport(r),
      (err: unknown) => !stale && setReport(errorText(err)),
    );
    return () => {
      stale = true;
    };
  }, [view.camera, sha, frames, state, commands]);
  return report;
}

function ModelCard({
  view,
  commands,
  writable,
  reload,
}: {
  view: CandidateView;
  /** Commands sent from this card so far. */
  commands: number;
  writable: boolean;
  /** Loads the views again; with a camera, also counts a command of that camera's, in the same render. */
  reload: (commandOf?: string) => Promise<void>;
}) {
  const shared = useShared();
  const [message, setMessage] = useState<Message | null>(null);
  /**
   * `commands` is bumped after each command, so the evidence is fetched again even when no count moved; in the same
   * render as the reloaded view (the page bumps it with its views), so a command that also moves a count fetches it
   * once.
   */
  const report = useEvidence(view, commands);
  const act: Act = useCallback(
    async (name, body, done) => {
      const refused = await shared.command(name, body);
      setMessage(refused === undefined ? { text: done, ok: true } : { text: refused, ok: false });
      await reload(view.camera);
    },
    [shared, reload, view.camera],
  );
  return (
    <article class="camera models" data-camera={view.camera}>
      <h3>{view.camera}</h3>
      <dl class="facts">
        <BundleFacts which="live" bundle={view.live} />
        <BundleFacts which="candidate" bundle={view.candidate} />
        <BundleFacts which="previous" bundle={view.previous} />
      </dl>
      <Actions view={view} report={report} writable={writable} act={act} />
      {message !== null && (
        <p class={`message ${message.ok ? "ok" : "error"}`} role="status" data-role="message">
          {message.text}
        </p>
      )}
      <JobPanel view={view} writable={writable} act={act} />
      <ShadowPanel view={view} writable={writable} act={act} />
      {typeof report === "string" ? (
        <p class="message error" data-role="evidence-error">
          evidence: {report}
        </p>
      ) : (
        report !== null && <Evidence report={report} />
      )}
    </article>
  );
}

export function ModelsPage() {
  const shared = useShared();
  const [views, setViews] = useState<CandidateView[] | null>(null);
  const [commands, setCommands] = useState<Readonly<Record<string, number>>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const load = useCallback(async (commandOf?: string) => {
    try {
      setViews((await api.candidates()).cameras);
      setProblem(null);
    } catch (err) {
      setProblem(errorText(err));
    }
    if (commandOf !== undefined) setCommands((c) => ({ ...c, [commandOf]: (c[commandOf] ?? 0) + 1 }));
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  // poll only while something moves: an idle page asks nothing of the daemon beyond the status every page polls,
  // whose cameras' candidate views tell of a job or shadow started elsewhere (MQTT, Sparkplug, the CLI)
  const startedElsewhere =
    shared.status?.cameras.some((c) => c.candidate !== undefined && isRunning(c.candidate)) ?? false;
  const busy = (views?.some(isRunning) ?? false) || startedElsewhere;
  useEffect(() => {
    if (!busy) return;
    const timer = setInterval(() => void load(), POLL_MS);
    return () => clearInterval(timer);
  }, [busy, load]);
  const writable = shared.session !== null && (shared.status?.console.operators ?? false);
  return (
    <section class="page" id="models">
      <h2>Models</h2>
      <p class="dim">
        Retrain a candidate from the collected normals and the confirmed false alarms, run it in shadow beside
        the live model, compare, then promote it or roll back. {writable ? "" : "Log in to change anything."}
      </p>
      {problem !== null && (
        <p class="message error" data-role="models-error">
          {problem}
        </p>
      )}
      {views === null ? (
        problem === null && <p class="dim">…</p>
      ) : (
        <div class="cards">
          {views.length === 0 && <p class="dim">no cameras configured</p>}
          {views.map((view) => (
            <ModelCard
              key={view.camera}
              view={view}
              commands={commands[view.camera] ?? 0}
              writable={writable}
              reload={load}
            />
          ))}
        </div>
      )}
    </section>
  );
}
