import { CAPS_NAME, NATIVE_SINK_NAME, SINK_NAME, sourceProblem, TEE_NAME } from "../config/rules.js";
import { StpmdError } from "../core/errors.js";

export { CAPS_NAME, NATIVE_SINK_NAME, SINK_NAME };

/** The caps of the frames a camera hands its model: packed RGB at the capture size. */
export function captureCaps(width: number, height: number): string {
  return `video/x-raw,format=RGB,width=${width},height=${height}`;
}

/**
 * The caps a camera switches its capsfilter to for one frame the collector keeps: the cropped frame at its own
 * size, or scaled down (aspect kept) so that its long side is at most `maxLongSide` — videoscale fixates a size
 * range that way when the pixel aspect ratio is fixed (4000×3000 into [1,2048]² gives 2048×1536; 1500×1000 passes
 * through). RGBA rather than RGB so that each sample's caps say which kind it is: the switch takes effect a frame
 * or two after it is made, and sizes alone could not tell an ROI that happens to be the model's size.
 */
export function originalCaps(maxLongSide: number): string {
  return `video/x-raw,format=RGBA,width=[1,${maxLongSide}],height=[1,${maxLongSide}],pixel-aspect-ratio=1/1`;
}

/**
 * The caps of a camera's native frames (`records.images.native`): the cropped frame as packed RGB at its own size,
 * or scaled down (aspect kept) to a long side of at most `maxLongSide`, as {@link originalCaps} fixates it.
 */
export function nativeCaps(maxLongSide: number, roi?: { width: number; height: number }): string {
  if (roi === undefined)
    return `video/x-raw,format=RGB,width=[1,${maxLongSide}],height=[1,${maxLongSide}],pixel-aspect-ratio=1/1`;
  // With an ROI the size is known, and given exactly, without a pixel aspect ratio. Behind videocrop's caps
  // (GStreamer 1.22), videoscale fixates the range to a 1-pixel-wide frame (a 128×128 ROI of a 160×144 PNG replay,
  // cap 112, came as 1×112), and that exact size with pixel-aspect-ratio=1/1 came out scrambled: both failed the
  // collection test in test/daemon/stations.test.ts, which compares the kept frame with the part it shows.
  const scale = Math.min(1, maxLongSide / Math.max(roi.width, roi.height));
  const width = Math.max(1, Math.round(roi.width * scale));
  const height = Math.max(1, Math.round(roi.height * scale));
  return `video/x-raw,format=RGB,width=${width},height=${height}`;
}

/**
 * Turns a user's GStreamer source description into a full pipeline that ends in our appsink, delivering packed RGB
 * at the capture size of the camera's bundle (its model input, or the scaled image its tiles are cut from), cropped
 * to the camera's ROI first when it has one.
 *
 * Conversion and scaling happen inside GStreamer (`videoconvert ! videoscale ! caps`), in its streaming thread and
 * in C, so Node only copies finished frames. Both elements pass buffers through untouched when the source already
 * delivers RGB at the right size. videoscale uses `method=bilinear2` (multi-tap, antialiased): the default 2-tap
 * bilinear aliases on large reductions (900 → 256 px) and the model, trained on antialiased resizes, then scores
 * normal parts higher — measured on the bottle test/good images: max score 0.073 with the default (above the bundle's
 * threshold 0.060, i.e. false alarms) vs 0.056 with bilinear2 and 0.059 with sharp's resize used in training.
 *
 * The source is used as written. Examples:
 * - `v4l2src device=/dev/video0`
 * - `rtspsrc location=rtsp://cam/stream ! rtph264depay ! h264parse ! avdec_h264`
 * - `multifilesrc location=/data/%03d.png index=0 loop=true ! pngdec` (replay; runs as fast as it can decode,
 *   since our appsink does not sync to the clock. For replay at a camera's pace, give the files a rate and sync
 *   in the source: `multifilesrc … caps="image/png,framerate=5/1" ! pngdec ! identity sync=true`.)
 * - `videotestsrc is-live=true`
 * - Jetson: `nvarguscamerasrc ! nvvidconv`. nvarguscamerasrc produces NVMM (GPU) buffers that videoconvert cannot
 *   read, so Jetson users put `nvvidconv` (hardware conversion/scaling) at the end of their source, optionally with
 *   caps such as `nvvidconv ! video/x-raw,width=256,height=256`. We keep it as is; our videoconvert/videoscale then
 *   only finish the job (or pass through).
 *
 * @param where config path of the camera used in error messages, e.g. `cameras[1] (id "line2")`.
 * @param nativeMaxLongSide also deliver every frame at the ROI's own resolution ({@link nativeCaps}), to a second
 *   appsink: see {@link nativeBranches}.
 * @throws StpmdError ERR_CONFIG_INVALID when the source is empty, already contains an appsink or our sink name, or
 *   starts/ends with a dangling `!`; or when width/height are not positive integers.
 */
export function buildPipelineDescription(
  source: string,
  width: number,
  height: number,
  where = "camera",
  roi?: { x: number; y: number; width: number; height: number },
  nativeMaxLongSide?: number,
): string {
  const trimmed = validateSource(source, where);
  validateDimension(width, `${where}.width`);
  validateDimension(height, `${where}.height`);
  const head = `${trimmed}${roi ? cropDescription(roi) : ""} ! videoconvert`;
  const model = `videoscale method=bilinear2 ! capsfilter name=${CAPS_NAME} caps="${captureCaps(width, height)}"`;
  if (nativeMaxLongSide !== undefined) return nativeBranches(head, model, nativeCaps(nativeMaxLongSide, roi));
  return `${head} ! ${model} ! appsink name=${SINK_NAME} max-buffers=2 drop=true sync=false emit-signals=false`;
  // max-buffers=2 drop=true: when inference falls behind we want the newest frames, never a growing backlog.
  // sync=false: deliver as soon as a frame exists; live sources pace themselves.
  // The capsfilter is named so a camera can switch it to originalCaps for a frame the collector keeps.
}

/**
 * A camera that keeps native frames: a tee after the conversion feeds two branches, the model's (scaled to the
 * capture size, to the usual appsink) and the native one (the ROI at its own size, capped, to a second appsink).
 * Neither appsink drops (drop=false): the one place frames are dropped is the leaky queue before the tee, which
 * keeps the newest when capture falls behind (as the single appsink's max-buffers=2 drop=true does). So both
 * appsinks receive every frame that passed the tee, in the same order, and the capture pulls one sample from each
 * at a time: the two samples of a pull are one frame (GstSource). The branches' queues let the two scalings run on
 * two threads.
 *
 * The native branch's cost is mostly the native frame's copy into Node, which the binding makes for every sample:
 * docs/records.md (Measured) has it per frame, with a first design that resized each native frame with sharp in the
 * capture process instead, and cost more.
 */
function nativeBranches(head: string, model: string, native: string): string {
  const queue = "queue max-size-buffers=1 max-size-bytes=0 max-size-time=0";
  const sink = "max-buffers=1 drop=false sync=false emit-signals=false";
  return (
    `${head} ! ${queue} leaky=downstream ! tee name=${TEE_NAME}` +
    ` ${TEE_NAME}. ! ${queue} ! ${model} ! appsink name=${SINK_NAME} ${sink}` +
    ` ${TEE_NAME}. ! ${queue} ! videoscale method=bilinear2 ! capsfilter caps="${native}"` +
    ` ! appsink name=${NATIVE_SINK_NAME} ${sink}`
  );
}

/**
 * The ROI crop, in GStreamer before conversion and scaling: videocrop with the left and top edges given and the
 * right and bottom ones on auto (-1), which it then derives from the caps that follow, so the crop needs no
 * knowledge of the source's frame size. The crop is a change of the buffer's offsets and strides, not a copy. An
 * ROI that does not fit the source's frames fails caps negotiation ("not-negotiated"), which the camera reports.
 */
function cropDescription(roi: { x: number; y: number; width: number; height: number }): string {
  return ` ! videocrop left=${roi.x} top=${roi.y} right=-1 bottom=-1 ! video/x-raw,width=${roi.width},height=${roi.height}`;
}

function validateSource(source: string, where: string): string {
  const problem =
    typeof source === "string" ? sourceProblem(source) : "must be a non-empty GStreamer source description";
  if (problem !== undefined) throw new StpmdError("ERR_CONFIG_INVALID", `${where}.source: ${problem}`);
  return source.trim();
}

function validateDimension(value: number, key: string): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new StpmdError("ERR_CONFIG_INVALID", `${key}: must be a positive integer (got ${String(value)})`);
  }
}

/**
 * Bytes between the starts of two rows of a GStreamer RGB frame: GStreamer aligns every row of packed RGB to 4
 * bytes, so widths where `width * 3` is not a multiple of 4 carry 1–3 padding bytes per row.
 */
export function gstreamerRgbStride(width: number): number {
  return Math.ceil((width * 3) / 4) * 4;
}

/**
 * Packed RGB (`width * height * 3` bytes, no row padding) from a frame as the appsink delivers it.
 * Without padding this is a view of `data` (the addon already hands us a private copy); otherwise rows are copied.
 *
 * @throws RangeError when `data` is too short for the frame, which means the caps are not what we asked for.
 */
export function packRgbRows(data: Uint8Array, width: number, height: number): Uint8Array {
  const rowBytes = width * 3;
  const packedBytes = rowBytes * height;
  if (data.byteLength === packedBytes) {
    return new Uint8Array(data.buffer, data.byteOffset, packedBytes);
  }
  const stride = gstreamerRgbStride(width);
  // The last row may or may not carry its padding, so only require the bytes that are read.
  const needed = height === 0 ? 0 : stride * (height - 1) + rowBytes;
  if (data.byteLength < needed) {
    throw new RangeError(
      `RGB frame of ${width}×${height} needs ${needed} bytes with a row stride of ${stride}, got ${data.byteLength}`,
    );
  }
  const packed = new Uint8Array(packedBytes);
  for (let row = 0; row < height; row++) {
    const start = row * stride;
    packed.set(data.subarray(start, start + rowBytes), row * rowBytes);
  }
  return packed;
}

/** Name stpmd gives a replay's multifilesrc when the user gave it none, to find it with findChild. */
export const REPLAY_NAME = "stpmd_replay";

/** A multifilesrc replay as the user's source describes it (multifilesrc's defaults where it says nothing). */
export interface ReplaySettings {
  /** The multifilesrc's name: the user's, or REPLAY_NAME. */
  element: string;
  /** printf-style file name pattern with one integer conversion, e.g. `/data/%03d.png`. */
  location: string;
  /** start-index: where a loop starts again. */
  startIndex: number;
  /** index: the first file played. */
  index: number;
  /** stop-index, or -1 for "until the first missing file". */
  stopIndex: number;
  loop: boolean;
  /** The files are PNGs (by the pattern's extension or the caps), so they can be checked as such. */
  png: boolean;
  /**
   * The decoded files reach the ROI's crop at their own pixel size: only elements of {@link KEEPS_SIZE} and caps
   * without a size stand between. Only then does a file's header say whether its frame holds the ROI.
   */
  sizeKept: boolean;
}

/**
 * Elements that pass a frame on at the size they got it. A whitelist: an element that scales, pads or rotates
 * (videoscale, videobox, videoflip, nvvidconv) would make a file's header size wrong for the ROI, and a small file
 * scaled up must not be skipped as too small.
 */
const KEEPS_SIZE: ReadonlySet<string> = new Set([
  "pngdec",
  "jpegdec",
  "jpegparse",
  "decodebin",
  "identity",
  "queue",
  "videoconvert",
  "videorate",
]);

/**
 * Whether the elements from token `from` on, up to the first videocrop (stpmd's ROI crop, or the user's, which only
 * makes frames smaller), keep the size of what the source's decoder produces.
 */
function keepsSize(tokens: readonly Token[], from: number): boolean {
  for (let i = from; i + 1 < tokens.length; i++) {
    if (tokens[i]!.text !== "!") continue;
    const head = tokens[i + 1]!.text;
    if (head === "videocrop") return true;
    const sizedCaps = /^(video|image)\//.test(head) && /width|height/.test(head);
    if (!KEEPS_SIZE.has(head) && (sizedCaps || !/^(video|image)\//.test(head))) return false;
  }
  return true;
}

interface Token {
  text: string;
  start: number;
  end: number;
}

/** gst-launch words (quotes kept, whitespace outside quotes separates them) and `!` links as their own tokens. */
function launchTokens(source: string): Token[] {
  const tokens: Token[] = [];
  let start = -1;
  let quote: string | null = null;
  const close = (end: number) => {
    if (start >= 0) tokens.push({ text: source.slice(start, end), start, end });
    start = -1;
  };
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (quote !== null) {
      if (c === quote) quote = null;
      continue;
    }
    if (c === '"' || c === "'") {
      if (start < 0) start = i;
      quote = c;
    } else if (c === "!") {
      close(i);
      tokens.push({ text: "!", start: i, end: i + 1 });
    } else if (/\s/.test(c)) {
      close(i);
    } else if (start < 0) {
      start = i;
    }
  }
  close(source.length);
  return tokens;
}

function unquote(value: string): string {
  const q = value[0];
  return (q === '"' || q === "'") && value.endsWith(q) && value.length >= 2 ? value.slice(1, -1) : value;
}

/** The file name multifilesrc opens for `index`, or null when the pattern has no integer conversion. */
export function replayFileName(location: string, index: number): string | null {
  const match = /%(0?)(\d*)d/.exec(location);
  if (match === null) return null;
  const digits = String(index).padStart(Number(match[2] || 0), match[1] === "0" ? "0" : " ");
  return location.slice(0, match.index) + digits + location.slice(match.index + match[0].length);
}

/**
 * The source's multifilesrc replay, with the description to launch instead of `source`: the same, with
 * `name=stpmd_replay` added to a multifilesrc that has no name. Null when the source has no multifilesrc, or one
 * whose location has no `%d` (a single file).
 */
export function findReplay(source: string): { source: string; replay: ReplaySettings } | null {
  const tokens = launchTokens(source);
  const at = tokens.findIndex((t) => t.text === "multifilesrc");
  if (at < 0) return null;
  const props = new Map<string, string>();
  let i = at + 1;
  for (; i < tokens.length && tokens[i]!.text !== "!"; i++) {
    const text = tokens[i]!.text;
    const eq = text.indexOf("=");
    if (eq > 0) props.set(text.slice(0, eq), unquote(text.slice(eq + 1)));
  }
  const location = props.get("location") ?? "%05d";
  if (replayFileName(location, 0) === null) return null;
  const int = (key: string, fallback: number) => {
    const value = Number.parseInt(props.get(key) ?? "", 10);
    return Number.isInteger(value) ? value : fallback;
  };
  const startIndex = int("start-index", 0);
  const caps = props.get("caps") ?? "";
  const replay: ReplaySettings = {
    element: props.get("name") ?? REPLAY_NAME,
    location,
    startIndex,
    index: int("index", startIndex),
    stopIndex: int("stop-index", -1),
    loop: /^(true|yes|1)$/i.test(props.get("loop") ?? ""),
    png: /\.png$/i.test(location) || caps.includes("image/png"),
    sizeKept: keepsSize(tokens, at + 1),
  };
  if (props.has("name")) return { source, replay };
  const end = tokens[at]!.end;
  return { source: `${source.slice(0, end)} name=${REPLAY_NAME}${source.slice(end)}`, replay };
}
