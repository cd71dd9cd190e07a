/**
 * The review queue: flagged parts, newest first, filtered by camera, time, score and label, kept current from the
 * result stream, labelled from the keyboard (j/k move, Enter opens, f false alarm, d confirmed defect, u undo,
 * ? help).
 */
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { api, type PartRecord, type RecordsPage } from "./api.js";
import { errorText, fmt, fromLocalInput, timeText } from "./format.js";
import { applyLabel, labelText } from "./labels.js";
import { useShared } from "./shared.js";

const PAGE = 50;
/**
 * How long after a defect arrives on the stream the queue asks for it: records are written in batches off the
 * frame path, so the row lands a moment after the event.
 */
const REFRESH_AFTER_MS = 1500;

interface Filters {
  camera: string;
  from: string;
  score_min: string;
  label: string;
}

const KEYS: [string, string][] = [
  ["j / k", "next / previous part"],
  ["Enter", "open the part"],
  ["f", "mark a false alarm"],
  ["d", "confirm the defect"],
  ["u", "undo the label"],
  ["?", "this help"],
];

/** Newest first, by capture time then id (the server's order), without duplicates. */
function merged(newer: PartRecord[], older: PartRecord[]): PartRecord[] {
  const byId = new Map<number, PartRecord>();
  for (const r of [...older, ...newer]) byId.set(r.id, r);
  return [...byId.values()].sort((a, b) => b.ts - a.ts || b.id - a.id);
}

export function QueuePage() {
  const shared = useShared();
  const [filters, setFilters] = useState<Filters>({ camera: "", from: "", score_min: "", label: "" });
  const [records, setRecords] = useState<PartRecord[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  /** The selected part by id: parts arriving above it do not move the selection. */
  const [selectedId, setSelectedId] = useState<number | undefined>();
  const [message, setMessage] = useState<{ text: string; ok: boolean } | null>(null);
  const [help, setHelp] = useState(false);
  const [loading, setLoading] = useState(true);
  const list = useRef<HTMLOListElement>(null);

  const load = useCallback(
    async (after?: string): Promise<RecordsPage | undefined> => {
      try {
        const page = await api.records({
          verdict: "defect",
          limit: PAGE,
          ...(filters.camera !== "" ? { camera: filters.camera } : {}),
          ...(fromLocalInput(filters.from) !== undefined ? { from: fromLocalInput(filters.from) } : {}),
          ...(filters.score_min !== "" ? { score_min: Number(filters.score_min) } : {}),
          ...(filters.label !== "" ? { label: filters.label } : {}),
          ...(after !== undefined ? { cursor: after } : {}),
        });
        return page;
      } catch (err) {
        setMessage({ text: errorText(err), ok: false });
        return undefined;
      } finally {
        setLoading(false);
      }
    },
    [filters],
  );

  // a new filter starts the list again
  useEffect(() => {
    let stale = false;
    setLoading(true);
    void load().then((page) => {
      if (stale || page === undefined) return;
      setRecords(page.records);
      setCursor(page.next_cursor);
      setSelectedId(undefined);
    });
    return () => {
      stale = true;
    };
  }, [load]);

  // new defects: fetch the newest page a moment later and merge it in (the selection stays on its part)
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const unsubscribe = shared.onResult((r) => {
      if (r.verdict !== "defect" || (filters.camera !== "" && r.camera !== filters.camera)) return;
      timer ??= setTimeout(async () => {
        timer = undefined;
        const page = await load();
        if (page !== undefined) setRecords((old) => merged(page.records, old));
      }, REFRESH_AFTER_MS);
    });
    return () => {
      unsubscribe();
      clearTimeout(timer);
    };
  }, [shared.onResult, filters.camera, load]);

  const found = records.findIndex((r) => r.id === selectedId);
  const selected = Math.max(found, 0);
  const current = records[selected];
  const select = (i: number) => setSelectedId(records[Math.max(0, Math.min(i, records.length - 1))]?.id);

  const label = useCallback(
    async (which: "false_alarm" | "confirmed_defect" | null) => {
      if (current === undefined) return;
      try {
        const record = await applyLabel(shared, current, which);
        setRecords((old) => old.map((r) => (r.id === record.id ? record : r)));
        setMessage({ text: `part ${record.id}: ${labelText(record.label)}`, ok: true });
      } catch (err) {
        setMessage({ text: errorText(err), ok: false });
      }
    },
    [current, shared],
  );

  // one listener for the page's life, reading the state of the latest render: keys pressed faster than effects
  // run (k then Enter) act on what the operator sees, never on a render before
  const keys = useRef({ selected, select, current, label });
  keys.current = { selected, select, current, label };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (e.ctrlKey || e.metaKey || e.altKey || target?.closest("input, select, textarea") != null) return;
      const now = keys.current;
      if (e.key === "j") now.select(now.selected + 1);
      else if (e.key === "k") now.select(now.selected - 1);
      else if (e.key === "Enter" && now.current !== undefined) location.hash = `#/part/${now.current.id}`;
      else if (e.key === "f") void now.label("false_alarm");
      else if (e.key === "d") void now.label("confirmed_defect");
      else if (e.key === "u") void now.label(null);
      else if (e.key === "?") setHelp((h) => !h);
      else return;
      e.preventDefault();
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);

  useEffect(() => {
    list.current?.querySelector(".selected")?.scrollIntoView({ block: "nearest" });
  }, [selected]);

  const more = async () => {
    if (cursor === null) return;
    const page = await load(cursor);
    if (page === undefined) return;
    setRecords((old) => merged(old, page.records));
    setCursor(page.next_cursor);
  };

  const set = (key: keyof Filters) => (e: Event) =>
    setFilters((old) => ({ ...old, [key]: (e.currentTarget as HTMLInputElement).value }));
  const cameras = shared.status?.cameras.map((c) => c.id) ?? [];
  return (
    <section class="page" id="queue">
      <h2>Review queue</h2>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          camera
          <select id="filter-camera" value={filters.camera} onChange={set("camera")}>
            <option value="">all</option>
            {cameras.map((id) => (
              <option key={id} value={id}>
                {id}
              </option>
            ))}
          </select>
        </label>
        <label>
          since
          <input id="filter-from" type="datetime-local" value={filters.from} onInput={set("from")} />
        </label>
        <label>
          score ≥
          <input
            id="filter-score"
            type="number"
            step="any"
            size={6}
            value={filters.score_min}
            onInput={set("score_min")}
          />
        </label>
        <label>
          label
          <select id="filter-label" value={filters.label} onChange={set("label")}>
            <option value="">any</option>
            <option value="none">not reviewed</option>
            <option value="false_alarm">false alarm</option>
            <option value="confirmed_defect">confirmed defect</option>
          </select>
        </label>
        <button type="button" onClick={() => setHelp((h) => !h)}>
          Keys (?)
        </button>
      </form>
      {help && (
        <dl id="help" class="help">
          {KEYS.map(([key, what]) => [
            <dt key={`${key}-k`}>
              <kbd>{key}</kbd>
            </dt>,
            <dd key={`${key}-w`}>{what}</dd>,
          ])}
        </dl>
      )}
      {message !== null && (
        <p id="queue-message" class={`message ${message.ok ? "ok" : "error"}`}>
          {message.text}
        </p>
      )}
      {!loading && records.length === 0 && <p class="dim">no flagged parts match</p>}
      <ol class="parts" ref={list}>
        {records.map((r, i) => (
          <li
            key={r.id}
            data-id={r.id}
            data-ts={r.ts}
            class={`part ${i === selected ? "selected" : ""}`}
            aria-current={i === selected ? "true" : undefined}
            onClick={() => select(i)}
            onDblClick={() => {
              location.hash = `#/part/${r.id}`;
            }}
            onKeyDown={() => undefined}
          >
            {r.image !== null && (
              <img class="thumb" alt={`part ${r.id}`} loading="lazy" src={api.imageUrl(r.id, "image")} />
            )}
            <div class="what">
              <a href={`#/part/${r.id}`}>
                {r.camera} · {r.part_id ?? `frame ${r.seq}`}
              </a>
              <span class="dim">{timeText(r.time)}</span>
            </div>
            <span class="score bad">{fmt(r.score)}</span>
            <span class="dim">/ {fmt(r.threshold)}</span>
            <span class={`badge label ${r.label ?? "none"}`} data-role="label">
              {labelText(r.label)}
            </span>
          </li>
        ))}
      </ol>
      {cursor !== null && (
        <button type="button" id="more" onClick={more}>
          Older parts
        </button>
      )}
    </section>
  );
}
