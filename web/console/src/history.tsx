/**
 * History: verdicts per hour per camera (the record's hourly counts), defect and false-alarm rates, and a histogram
 * of recent scores with the threshold drawn over it; and an export of a recent span as CSV, as
 * `stpmd records export --csv` writes it.
 */
import { useEffect, useState } from "preact/hooks";
import { api, type HourlyRow, type PartRecord, type ReviewCounts } from "./api.js";
import { errorText, fmt, percent } from "./format.js";
import { useShared } from "./shared.js";

const SPANS: [string, number][] = [
  ["8 h", 8],
  ["24 h", 24],
  ["7 days", 168],
];
/** The export's spans: the last hour, a shift, a day (durations: the daemon counts back from the click). */
const EXPORT_SPANS: [string, string][] = [
  ["last hour", "1h"],
  ["shift (8 h)", "8h"],
  ["day (24 h)", "24h"],
];

/** Scores in the histogram: the newest frames of the span (the record keeps every frame's score). */
const HISTOGRAM_FRAMES = 1000;
const BINS = 30;

function HourBars({ rows }: { rows: HourlyRow[] }) {
  const top = Math.max(1, ...rows.map((r) => r.parts));
  const w = 100 / Math.max(rows.length, 1);
  return (
    <svg
      class="bars"
      viewBox="0 0 100 40"
      preserveAspectRatio="none"
      role="img"
      aria-label="verdicts per hour"
    >
      {rows.map((r, i) => {
        const h = (n: number) => (n / top) * 40;
        return (
          <g key={r.hour}>
            <title>{`${new Date(r.hour).toLocaleString()}: ${r.ok} ok, ${r.defect} defect, ${r.error} error`}</title>
            <rect x={i * w} width={w * 0.9} y={40 - h(r.ok)} height={h(r.ok)} class="ok" />
            <rect
              x={i * w}
              width={w * 0.9}
              y={40 - h(r.ok) - h(r.defect)}
              height={h(r.defect)}
              class="defect"
            />
            <rect
              x={i * w}
              width={w * 0.9}
              y={40 - h(r.ok) - h(r.defect) - h(r.error)}
              height={h(r.error)}
              class="error"
            />
          </g>
        );
      })}
    </svg>
  );
}

function Histogram({ scores, threshold }: { scores: number[]; threshold: number | null }) {
  if (scores.length === 0) return <p class="dim">no scores in this span</p>;
  const top = Math.max(...scores, (threshold ?? 0) * 1.2) || 1;
  const bins = new Array<number>(BINS).fill(0);
  for (const s of scores) bins[Math.min(BINS - 1, Math.floor((s / top) * BINS))]! += 1;
  const most = Math.max(...bins);
  const x = threshold === null ? null : (threshold / top) * 100;
  return (
    <svg
      class="histogram"
      viewBox="0 0 100 40"
      preserveAspectRatio="none"
      role="img"
      aria-label="score histogram"
    >
      {bins.map((n, i) => (
        <rect
          key={i}
          x={(i * 100) / BINS}
          width={(100 / BINS) * 0.9}
          y={40 - (n / most) * 38}
          height={(n / most) * 38}
        />
      ))}
      {x !== null && <line class="threshold" x1={x} x2={x} y1={0} y2={40} />}
    </svg>
  );
}

function CameraHistory({
  camera,
  rows,
  hours,
  review,
  threshold,
}: {
  camera: string;
  rows: HourlyRow[];
  hours: number;
  review: ReviewCounts["cameras"][string] | undefined;
  threshold: number | null;
}) {
  const [scores, setScores] = useState<number[] | string>("…");
  useEffect(() => {
    const from = new Date(Date.now() - hours * 3600_000).toISOString();
    api.records({ camera, from, limit: HISTOGRAM_FRAMES }).then(
      (page) => setScores(page.records.flatMap((r: PartRecord) => (r.score === null ? [] : [r.score]))),
      (err: unknown) => setScores(errorText(err)),
    );
  }, [camera, hours]);
  const parts = rows.reduce((n, r) => n + r.parts, 0);
  const defects = rows.reduce((n, r) => n + r.defect, 0);
  const reviewed = review === undefined ? 0 : review.false_alarm + review.confirmed_defect;
  return (
    <article class="camera history" data-camera={camera}>
      <h3>{camera}</h3>
      <p>
        <span data-role="parts">{parts}</span> parts, <span data-role="defects">{defects}</span> flagged (
        <span data-role="defect-rate">{parts === 0 ? "–" : percent(defects / parts)}</span>); false alarms:{" "}
        <span data-role="false-alarm-rate">
          {review === undefined || reviewed === 0
            ? "none reviewed"
            : `${percent(review.false_alarm / reviewed)} of ${reviewed} reviewed`}
        </span>
      </p>
      <HourBars rows={rows} />
      <p class="dim">
        Scores of the newest {HISTOGRAM_FRAMES} frames kept; threshold {fmt(threshold)} (line)
      </p>
      {typeof scores === "string" ? (
        <p class="dim">{scores}</p>
      ) : (
        <Histogram scores={scores} threshold={threshold} />
      )}
    </article>
  );
}

/** A link, not a fetch: the browser downloads the stream to disk as it comes (the daemon sends it in chunks). */
function ExportCsv({ cameras }: { cameras: string[] }) {
  const [since, setSince] = useState("1h");
  const [camera, setCamera] = useState("");
  return (
    <form class="filters export" onSubmit={(e) => e.preventDefault()}>
      <label>
        export span
        <select
          id="export-since"
          value={since}
          onChange={(e) => setSince((e.currentTarget as HTMLSelectElement).value)}
        >
          {EXPORT_SPANS.map(([label, value]) => (
            <option key={value} value={value}>
              {label}
            </option>
          ))}
        </select>
      </label>
      <label>
        camera
        <select
          id="export-camera"
          value={camera}
          onChange={(e) => setCamera((e.currentTarget as HTMLSelectElement).value)}
        >
          <option value="">all</option>
          {cameras.map((id) => (
            <option key={id} value={id}>
              {id}
            </option>
          ))}
        </select>
      </label>
      <a
        class="button"
        data-role="export-csv"
        href={api.exportUrl("csv", { since, ...(camera !== "" ? { camera } : {}) })}
        download
      >
        Export CSV
      </a>
    </form>
  );
}

export function HistoryPage() {
  const shared = useShared();
  const [hours, setHours] = useState(24);
  const [rows, setRows] = useState<HourlyRow[] | string>("…");
  const [review, setReview] = useState<ReviewCounts | string>("…");
  useEffect(() => {
    const from = new Date(Date.now() - hours * 3600_000).toISOString();
    api.hourly({ from }).then(
      (reply) => setRows(reply.hours),
      (err: unknown) => setRows(errorText(err)),
    );
    api.reviewCounts().then(setReview, (err: unknown) => setReview(errorText(err)));
  }, [hours]);
  const cameras = shared.status?.cameras ?? [];
  return (
    <section class="page" id="history">
      <h2>History</h2>
      <div class="row">
        {SPANS.map(([label, h]) => (
          <button key={h} type="button" class={h === hours ? "current" : ""} onClick={() => setHours(h)}>
            {label}
          </button>
        ))}
      </div>
      <ExportCsv cameras={cameras.map((c) => c.id)} />
      {typeof rows === "string" && <p class="message error">{rows}</p>}
      {typeof review === "string" && review !== "…" && <p class="message error">review counts: {review}</p>}
      <div class="cards">
        {typeof rows !== "string" &&
          cameras.map((cam) => (
            <CameraHistory
              key={cam.id}
              camera={cam.id}
              rows={rows.filter((r) => r.camera === cam.id)}
              hours={hours}
              review={typeof review === "string" ? undefined : review.cameras[cam.id]}
              threshold={cam.threshold}
            />
          ))}
      </div>
    </section>
  );
}
