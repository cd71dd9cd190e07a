/**
 * A part's page (`#/part/<id>`): the part's frame with its anomaly map over it (opacity slider) and the
 * regions outlined, the score against the threshold, the model, the part id, the same camera's neighbours in time,
 * and the label buttons (false alarm, confirmed defect, undo, accept the draft mask).
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { api, type PartRecord } from "./api.js";
import { errorText, fmt, timeText } from "./format.js";
import { loadMap } from "./heatmap.js";
import { applyLabel, labelText } from "./labels.js";
import { useShared } from "./shared.js";

const NEIGHBOURS = 3;
/** How far after the part its newer neighbours are looked for. */
const NEIGHBOUR_WINDOW_MS = 10 * 60_000;

function Neighbours({ record }: { record: PartRecord }) {
  const [around, setAround] = useState<{ older: PartRecord[]; newer: PartRecord[] } | string>("…");
  useEffect(() => {
    let stale = false;
    Promise.all([
      api.records({ camera: record.camera, cursor: `${record.ts}.${record.id}`, limit: NEIGHBOURS }),
      api.records({
        camera: record.camera,
        from: String(record.ts),
        to: String(record.ts + NEIGHBOUR_WINDOW_MS),
        limit: 200,
      }),
    ]).then(
      ([older, window]) => {
        if (stale) return;
        // the window is newest first: the nearest newer parts are at its end
        const newer = window.records.filter(
          (r) => r.ts > record.ts || (r.ts === record.ts && r.id > record.id),
        );
        setAround({ older: older.records, newer: newer.slice(-NEIGHBOURS) });
      },
      (err: unknown) => !stale && setAround(errorText(err)),
    );
    return () => {
      stale = true;
    };
  }, [record.camera, record.ts, record.id]);
  if (typeof around === "string") return <p class="dim">{around}</p>;
  const item = (r: PartRecord) => (
    <li key={r.id}>
      <a href={`#/part/${r.id}`}>
        {timeText(r.time)} · {r.part_id ?? `frame ${r.seq}`}
      </a>{" "}
      <span class={r.verdict === "ok" ? "" : "bad"}>
        {r.verdict} {fmt(r.score)}
      </span>
    </li>
  );
  return (
    <ol id="neighbours" class="neighbours">
      {around.newer.map(item)}
      <li class="current">this part</li>
      {around.older.map(item)}
    </ol>
  );
}

export function PartPage({ id }: { id: number }) {
  const shared = useShared();
  const [record, setRecord] = useState<PartRecord | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [message, setMessage] = useState<{ text: string; ok: boolean } | null>(null);
  const [opacity, setOpacity] = useState(0.6);
  /** The confirmed defect's type (its folder in the labelled set); empty: the server's default. */
  const [defectType, setDefectType] = useState("");
  const [size, setSize] = useState<{ w: number; h: number } | undefined>();
  /** The map's size: the grid of the regions' pixels (the model's), which a frame kept natively is larger than. */
  const [mapSize, setMapSize] = useState<{ w: number; h: number } | undefined>();
  const heat = useRef<HTMLCanvasElement>(null);

  useEffect(() => {
    api.record(id).then(
      (r) => (r === undefined ? setProblem(`no record ${id} (retention may have deleted it)`) : setRecord(r)),
      (err: unknown) => setProblem(errorText(err)),
    );
  }, [id]);

  useEffect(() => {
    if (record?.map == null || heat.current === null) return;
    return loadMap(heat.current, api.imageUrl(record.id, "map"), setMapSize);
  }, [record?.id, record?.map]);

  // the queue's keys work here too
  useEffect(() => {
    if (record === undefined) return;
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (e.ctrlKey || e.metaKey || e.altKey || target?.closest("input, select, textarea") != null) return;
      const which = ({ f: "false_alarm", d: "confirmed_defect", u: null } as const)[e.key as "f" | "d" | "u"];
      if (which === undefined) return;
      e.preventDefault();
      applyLabel(shared, record, which).then(
        (updated) => {
          setRecord(updated);
          setMessage({ text: labelText(updated.label), ok: true });
        },
        (err: unknown) => setMessage({ text: errorText(err), ok: false }),
      );
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [record, shared]);

  if (problem !== undefined)
    return (
      <section class="page">
        <p class="message error">{problem}</p>
      </section>
    );
  if (record === undefined) return <p class="dim">loading part {id}…</p>;

  const act = async (run: () => Promise<PartRecord>, done: string) => {
    try {
      const updated = await run();
      setRecord(updated);
      setMessage({ text: done, ok: true });
    } catch (err) {
      setMessage({ text: errorText(err), ok: false });
    }
  };
  const ratio = record.score !== null && record.threshold ? record.score / record.threshold : null;
  /** The regions' grid: the map's (the model's) when there is one, else the frame's. */
  const grid = record.map == null ? size : mapSize;
  return (
    <section class="page" id="part" data-id={record.id}>
      <h2>
        Part {record.part_id ?? `#${record.id}`} · {record.camera} · {timeText(record.time)}
      </h2>
      <div class="part-layout">
        <div>
          {record.image === null ? (
            <p class="dim">no frame kept for this part (only defects and a sample of normal frames are)</p>
          ) : (
            <div class="overlay">
              <img
                id="part-image"
                alt={`part ${record.id} as inspected`}
                src={api.imageUrl(record.id, "image")}
                onLoad={(e) => setSize({ w: e.currentTarget.naturalWidth, h: e.currentTarget.naturalHeight })}
              />
              <canvas ref={heat} class="heat" style={{ opacity }} />
              {grid !== undefined &&
                record.regions.map((region, i) => {
                  const [x, y, w, h] = region.bbox as [number, number, number, number];
                  return (
                    <div
                      key={i}
                      class="region"
                      style={{
                        left: `${(x / grid.w) * 100}%`,
                        top: `${(y / grid.h) * 100}%`,
                        width: `${(w / grid.w) * 100}%`,
                        height: `${(h / grid.h) * 100}%`,
                      }}
                    />
                  );
                })}
            </div>
          )}
          <label class="row">
            heatmap
            <input
              id="opacity"
              type="range"
              min="0"
              max="1"
              step="0.05"
              value={opacity}
              onInput={(e) => setOpacity(Number(e.currentTarget.value))}
            />
          </label>
        </div>
        <div>
          <p class="row">
            score <span class={`score ${record.verdict === "ok" ? "" : "bad"}`}>{fmt(record.score)}</span>{" "}
            against threshold {fmt(record.threshold)}
            {ratio !== null && <span class="dim"> ({ratio.toFixed(2)}×)</span>}
          </p>
          <meter min={0} max={Math.max(2, ratio ?? 0)} low={1} high={1} optimum={0} value={ratio ?? 0} />
          <dl class="facts">
            <dt>verdict</dt>
            <dd>{record.verdict}</dd>
            <dt>label</dt>
            <dd data-role="label">{labelText(record.label)}</dd>
            <dt>part id</dt>
            <dd>{record.part_id ?? "–"}</dd>
            <dt>frame</dt>
            <dd>{record.seq}</dd>
            <dt>model</dt>
            <dd>{record.model_version}</dd>
            <dt>bundle</dt>
            <dd class="wrap">{record.bundle ?? "–"}</dd>
            <dt>threshold rule</dt>
            <dd>{record.threshold_rule ?? "–"}</dd>
            <dt>latency</dt>
            <dd>{record.latency_ms.toFixed(1)} ms</dd>
            <dt>regions</dt>
            <dd>
              {record.regions.length === 0
                ? "none"
                : record.regions
                    .map((r) => `${r.bbox.join("×")} (area ${r.area}, peak ${fmt(r.peak, 3)})`)
                    .join("; ")}
            </dd>
          </dl>
          <div class="row actions">
            <button
              type="button"
              id="label-false-alarm"
              onClick={() => act(() => applyLabel(shared, record, "false_alarm"), "marked a false alarm")}
            >
              False alarm (f)
            </button>
            <button
              type="button"
              id="label-defect"
              onClick={() =>
                act(
                  () => applyLabel(shared, record, "confirmed_defect", defectType.trim() || undefined),
                  "confirmed the defect",
                )
              }
            >
              Confirmed defect (d)
            </button>
            <input
              id="defect-type"
              placeholder="defect type"
              aria-label="defect type"
              size={12}
              value={defectType}
              onInput={(e) => setDefectType(e.currentTarget.value)}
            />
            <button
              type="button"
              id="label-undo"
              disabled={record.label === null}
              onClick={() => act(() => applyLabel(shared, record, null), "label undone")}
            >
              Undo (u)
            </button>
            {record.label === "confirmed_defect" && (
              <button
                type="button"
                id="accept-mask"
                onClick={() =>
                  act(async () => (await api.acceptMask(record.id)).record, "draft mask accepted")
                }
              >
                Accept mask
              </button>
            )}
          </div>
          {message !== null && (
            <p id="part-message" class={`message ${message.ok ? "ok" : "error"}`}>
              {message.text}
            </p>
          )}
          <h3>Same camera, nearby in time</h3>
          <Neighbours record={record} />
        </div>
      </div>
    </section>
  );
}
