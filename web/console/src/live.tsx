/**
 * Live: today's camera cards (score sparkline, last frame, last defect with the heatmap, counters, threshold and
 * enable controls), the node's switches (collection, reload) and the loaded models.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { api, type CameraSnapshot, type ConsoleResultEvent } from "./api.js";
import { falseAlarmText, fmt, ruleText } from "./format.js";
import { useShared } from "./shared.js";

/** Scores kept per camera for the sparkline. */
const HISTORY = 300;
/** Each of a card's two images is fetched at most this often (a 10 fps camera would otherwise load 10 JPEGs/s). */
const IMAGE_EVERY_MS = 500;

type ImageKind = "last" | "defect";

interface Shown {
  src?: string;
  caption: string;
}

/** Calls the newest `apply` now or once `IMAGE_EVERY_MS` has passed since the last call, whichever is later. */
class Throttle {
  private next = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pending: (() => void) | undefined;

  call(apply: () => void): void {
    this.pending = apply;
    const wait = this.next - Date.now();
    if (wait <= 0) this.fire();
    else this.timer ??= setTimeout(() => this.fire(), wait);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private fire(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.next = Date.now() + IMAGE_EVERY_MS;
    const apply = this.pending;
    this.pending = undefined;
    apply?.();
  }
}

function draw(canvas: HTMLCanvasElement, scores: ConsoleResultEvent[]): void {
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const newest = scores.at(-1);
  if (newest === undefined) return;
  const threshold = newest.threshold;
  const top = Math.max(threshold * 1.5, ...scores.map((r) => r.score ?? 0)) || 1;
  const y = (v: number) => height - 4 - (v / top) * (height - 8);
  const x = (i: number) => (i / (HISTORY - 1)) * width;
  ctx.strokeStyle = "#e2a336";
  ctx.setLineDash([6, 4]);
  ctx.beginPath();
  ctx.moveTo(0, y(threshold));
  ctx.lineTo(width, y(threshold));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.strokeStyle = "#3b82f6";
  ctx.lineWidth = 2;
  ctx.beginPath();
  // a null score (error verdict) is no point: the canvas skips a NaN coordinate
  scores.forEach((r, i) => {
    const at = r.score === null ? Number.NaN : y(r.score);
    if (i === 0) ctx.moveTo(x(i), at);
    else ctx.lineTo(x(i), at);
  });
  ctx.stroke();
  ctx.fillStyle = "#e5484d";
  scores.forEach((r, i) => {
    if (r.verdict === "defect" && r.score !== null) {
      ctx.beginPath();
      ctx.arc(x(i), y(r.score), 3, 0, 7);
      ctx.fill();
    }
    // error verdicts: a red bar over the whole height, where the line has no point
    if (r.verdict === "error") ctx.fillRect(x(i) - 1, 0, 2, height);
  });
}

const FIELDS: [keyof Values, string][] = [
  ["fps", "fps"],
  ["inspected", "inspected"],
  ["defects", "defects"],
  ["errors", "errors"],
  ["threshold", "threshold"],
  ["rule", "rule"],
  ["far", "false alarms"],
  ["aggregation", "part score"],
  ["bad", "bad frames"],
  ["dropped", "dropped"],
  ["model", "model"],
  ["recipe", "recipe"],
];

interface Values {
  fps: string;
  inspected: string;
  defects: string;
  errors: string;
  threshold: string;
  rule: string;
  far: string;
  aggregation: string;
  bad: string;
  dropped: string;
  model: string;
  /** The recipe the camera's last frame was judged under. */
  recipe: string;
}

function valuesOf(cam: CameraSnapshot): Values {
  return {
    fps: fmt(cam.fps, 3),
    inspected: String(cam.inspected),
    defects: String(cam.defects),
    errors: String(cam.errors),
    threshold: fmt(cam.threshold),
    rule: ruleText(cam.threshold_rule),
    far: falseAlarmText(cam.predicted_false_alarms),
    aggregation: cam.part_score ?? "–",
    bad: String(cam.bad_frames),
    dropped: String(cam.dropped_frames),
    model: cam.model_version ?? "–",
    recipe: cam.last === undefined ? "–" : (cam.last.recipe ?? "(none)"),
  };
}

/**
 * A checkbox that shows the server's state, and the operator's click until the command's answer and the refreshed
 * status replace it (a controlled input would snap back to the old state while the command runs).
 */
function Switch({
  on,
  disabled,
  change,
  text,
  ...rest
}: {
  on: boolean;
  disabled: boolean;
  change: (on: boolean) => Promise<unknown>;
  text: string;
  id?: string;
  "data-role"?: string;
}) {
  const [asked, setAsked] = useState<boolean | undefined>();
  return (
    <label class="row">
      <input
        {...rest}
        type="checkbox"
        checked={asked ?? on}
        disabled={disabled}
        onChange={async (e) => {
          const value = e.currentTarget.checked;
          setAsked(value);
          await change(value);
          setAsked(undefined);
        }}
      />
      {text}
    </label>
  );
}

function CameraCard({ cam, writable }: { cam: CameraSnapshot; writable: boolean }) {
  const shared = useShared();
  const [last, setLast] = useState<ConsoleResultEvent | undefined>();
  const [images, setImages] = useState<Record<ImageKind, Shown>>({
    last: { caption: "last frame" },
    defect: { caption: "no defect since start" },
  });
  const canvas = useRef<HTMLCanvasElement>(null);
  const threshold = useRef<HTMLInputElement>(null);

  useEffect(() => {
    const scores: ConsoleResultEvent[] = [];
    const throttles = { last: new Throttle(), defect: new Throttle() };
    let drawing = false;
    const show = (kind: ImageKind, r: ConsoleResultEvent, caption: string) =>
      throttles[kind].call(() =>
        setImages((old) => ({ ...old, [kind]: { src: api.cameraImageUrl(cam.id, kind, r.seq), caption } })),
      );
    const unsubscribe = shared.onResult((r) => {
      if (r.camera !== cam.id) return;
      scores.push(r);
      if (scores.length > HISTORY) scores.shift();
      setLast(r);
      show("last", r, `frame ${r.seq}${r.part_id ? ` · part ${r.part_id}` : ""}`);
      if (r.verdict === "defect") {
        const regions = `${r.regions} region${r.regions === 1 ? "" : "s"}`;
        show("defect", r, `defect: frame ${r.seq}, score ${fmt(r.score)}, ${regions}`);
      }
      if (!drawing) {
        drawing = true;
        requestAnimationFrame(() => {
          drawing = false;
          if (canvas.current) draw(canvas.current, scores);
        });
      }
    });
    return () => {
      unsubscribe();
      throttles.last.stop();
      throttles.defect.stop();
    };
  }, [cam.id, shared.onResult]);

  const values = valuesOf(cam);
  const stateClass =
    cam.state === "streaming" ? "ok" : cam.state === "disabled" || cam.state === "stopped" ? "" : "warn";
  // an error verdict (a score that is not a number) is shown as such, never as a good frame
  const scoreText =
    last === undefined ? "–" : last.verdict === "error" ? "error: no verdict" : fmt(last.score);
  const setThreshold = () => {
    const value = Number(threshold.current?.value);
    void shared.command("set_threshold", { camera: cam.id, threshold: value });
  };
  return (
    <article
      class={`camera ${last?.verdict === "defect" ? "defect" : last?.verdict === "error" ? "error" : ""}`}
      data-camera={cam.id}
    >
      <h3>
        {cam.id} <span class={`badge ${stateClass}`}>{cam.state}</span>
        <Switch
          data-role="enabled"
          text="enabled"
          on={cam.enabled}
          disabled={!writable}
          change={(enabled) => shared.command("enable_camera", { camera: cam.id, enabled })}
        />
      </h3>
      <div class="row">
        score{" "}
        <span class={`score ${last !== undefined && last.verdict !== "ok" ? "bad" : ""}`} data-role="score">
          {scoreText}
        </span>
      </div>
      <div class="images">
        {(["last", "defect"] as const).map((kind) => (
          <figure key={kind}>
            <div class="frame">
              <img
                alt={`${cam.id} ${kind === "last" ? "last frame" : "last defect"}`}
                data-role={kind}
                src={images[kind].src}
              />
            </div>
            <figcaption data-role={`${kind}-caption`}>{images[kind].caption}</figcaption>
          </figure>
        ))}
      </div>
      <canvas ref={canvas} width={600} height={100} />
      <dl>
        {FIELDS.map(([key, label]) => [
          <dt key={`${key}-t`}>{label}</dt>,
          <dd
            key={`${key}-d`}
            data-role={key}
            title={
              key === "far"
                ? "predicted false-alarm rate of the threshold on the bundle's validation normals, with its 95 % upper bound"
                : undefined
            }
          >
            {values[key]}
          </dd>,
        ])}
      </dl>
      <div class="row">
        <input
          ref={threshold}
          type="number"
          step="any"
          min="0"
          size={8}
          data-role="threshold-input"
          placeholder={fmt(cam.threshold)}
          disabled={!writable}
        />
        <button type="button" data-role="set-threshold" disabled={!writable} onClick={setThreshold}>
          Set threshold
        </button>
      </div>
    </article>
  );
}

export function LivePage() {
  const shared = useShared();
  const s = shared.status;
  if (s === null) return <p class="dim">waiting for the daemon…</p>;
  const writable = shared.session !== null && s.console.operators;
  const k = s.collection;
  return (
    <>
      <section id="controls" class="controls">
        <Switch
          id="collection"
          text="collect normal frames"
          on={k.enabled}
          disabled={!writable}
          change={(enabled) => shared.command("collection", { enabled })}
        />
        <span id="collected">
          {k.saved + k.failed + k.dropped === 0
            ? ""
            : `${k.saved} saved` +
              (k.failed + k.dropped > 0 ? ` (failed ${k.failed}, dropped ${k.dropped})` : "")}
        </span>
        <button
          id="reload"
          type="button"
          disabled={!writable}
          onClick={() => void shared.command("reload", {})}
        >
          Reload config and models
        </button>
        <label>
          recipe{" "}
          <select
            id="recipe"
            data-role="recipe"
            disabled={!writable || s.recipes.length === 0}
            value={s.recipe ?? ""}
            onChange={(e) => {
              const name = (e.currentTarget as HTMLSelectElement).value;
              void shared.command("select_recipe", { recipe: name === "" ? null : name });
            }}
          >
            <option value="">(camera settings)</option>
            {s.recipes.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <span id="models">
          {s.models.map((m) => `${m.bundle.split("/").pop()} ${m.model_version}`).join(" · ")}
        </span>
      </section>
      <div id="cameras">
        {s.cameras.map((cam) => (
          <CameraCard key={cam.id} cam={cam} writable={writable} />
        ))}
      </div>
    </>
  );
}
