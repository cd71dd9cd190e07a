import fs from "node:fs";
import type { RoiConfig } from "../config/index.js";
import { type ReplaySettings, replayFileName } from "./pipeline-description.js";

/** Files a replay must not hand to its decoder, and why. */
export interface BadReplayFile {
  index: number;
  file: string;
  problem: string;
}

/** The files GStreamer will play for a segment: indices `from`..`to`; `loop` lets multifilesrc wrap by itself. */
export interface ReplaySegment {
  from: number;
  to: number;
  loop: boolean;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Every complete PNG ends with this empty IEND chunk (length 0, type, CRC). */
const PNG_END = Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);

function readAt(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  const read = fs.readSync(fd, buf, 0, length, position);
  return buf.subarray(0, read);
}

/** The IHDR chunk follows the signature: length 13, "IHDR", then width and height (big-endian uint32). */
const IHDR_TYPE = Buffer.from("IHDR", "latin1");
const IHDR_END = PNG_SIGNATURE.length + 16;

/** A PNG's size from its header, or null when the header is not a readable IHDR. */
function pngSize(fd: number): { width: number; height: number } | null {
  const header = readAt(fd, IHDR_END, 0);
  if (header.length < IHDR_END || !header.subarray(12, 16).equals(IHDR_TYPE)) return null;
  return { width: header.readUInt32BE(16), height: header.readUInt32BE(20) };
}

/** Why a frame of `size` cannot hold `roi`, or null when it can. */
function roiProblem(size: { width: number; height: number }, roi: RoiConfig): string | null {
  if (roi.x + roi.width <= size.width && roi.y + roi.height <= size.height) return null;
  return (
    `is ${size.width}×${size.height} pixels, too small for the camera's ROI ${roi.x},${roi.y},${roi.width},${roi.height}` +
    ` (it needs at least ${roi.x + roi.width}×${roi.y + roi.height})`
  );
}

/**
 * Why `file` would break a replay, or null when it looks fine. Only what makes the decoder skip the file without
 * a word (empty, not a PNG) or lose its place in the stream (truncated): pngdec takes multifilesrc's buffers as one
 * byte stream, so a PNG cut short makes it read the next files as the rest of this one, and the camera stalls. With
 * `roi`, also a PNG too small to hold it: videocrop cannot crop its frame, the caps negotiation fails and stops the
 * run, and a replay restarted on that file would fail on it for ever. Checks the first 24 and last 12 bytes only,
 * so a scan of hundreds of files takes milliseconds.
 */
export function replayFileProblem(file: string, png: boolean, roi?: RoiConfig | null): string | null {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (err) {
    return `cannot be opened (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return "is empty (0 bytes)";
    if (!png) return null;
    if (!readAt(fd, PNG_SIGNATURE.length, 0).equals(PNG_SIGNATURE)) return "is not a PNG image";
    if (
      size < PNG_SIGNATURE.length + PNG_END.length ||
      !readAt(fd, PNG_END.length, size - PNG_END.length).equals(PNG_END)
    ) {
      return `is truncated: ${size} bytes and no PNG end (IEND) chunk`;
    }
    const frame = roi ? pngSize(fd) : null;
    return frame === null ? null : roiProblem(frame, roi!);
  } finally {
    fs.closeSync(fd);
  }
}

/** Size and modification time: a replaced file gets another chance. */
function fileVersion(file: string): string {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  return stat === undefined ? "" : `${stat.size}/${stat.mtimeMs}`;
}

/** Why a file that passed the checks is skipped: a run failed on it (see {@link ReplayCursor.runFailed}). */
const BLAMED_PROBLEM = "stopped the replay earlier and has not changed since";

/** A cursor's state as plain data, for a capture process that takes over the replay ({@link ReplayCursor.position}). */
export interface ReplayPosition {
  next: number;
  /** Files a run failed on, by index, with the version (size/mtime) that failed. */
  blamed: Array<[index: number, version: string]>;
}

/** Where a replay camera is in its files, and which of them it skips. */
export class ReplayCursor {
  readonly settings: ReplaySettings;
  /** The index the next segment starts at. */
  private next: number;
  /** Last index of the files (stop-index, or the one before the first missing file); < startIndex when none. */
  private last = -1;
  private bad = new Map<number, BadReplayFile>();
  /** Files a run failed on although they passed the checks, by index: skipped until they change (size, mtime). */
  private readonly blamed = new Map<number, string>();

  /** The camera's ROI in source pixels: files too small to hold it are bad files. */
  private readonly roi: RoiConfig | null;

  /**
   * @param resume where an earlier cursor of the same replay stood ({@link position}).
   * @param roi the camera's ROI, which every frame must hold.
   */
  constructor(settings: ReplaySettings, resume?: ReplayPosition, roi?: RoiConfig | null) {
    this.settings = settings;
    // a file's header tells its frame's size only when nothing scales it on the way to the crop
    this.roi = settings.sizeKept ? (roi ?? null) : null;
    this.next = resume?.next ?? settings.index;
    for (const [index, version] of resume?.blamed ?? []) this.blamed.set(index, version);
  }

  position(): ReplayPosition {
    return { next: this.next, blamed: [...this.blamed] };
  }

  fileName(index: number): string {
    return replayFileName(this.settings.location, index) ?? this.settings.location;
  }

  /** Checks every file of the replay again (they may have been replaced since). */
  rescan(): void {
    const { startIndex, stopIndex, png } = this.settings;
    this.bad = new Map();
    let index = startIndex;
    for (; stopIndex < 0 || index <= stopIndex; index++) {
      const file = this.fileName(index);
      if (!fs.existsSync(file)) break;
      const problem = replayFileProblem(file, png, this.roi) ?? this.blamedProblem(index, file);
      if (problem !== null) this.bad.set(index, { index, file, problem });
    }
    this.last = index - 1;
  }

  private blamedProblem(index: number, file: string): string | null {
    const blamed = this.blamed.get(index);
    if (blamed === undefined) return null;
    if (blamed === fileVersion(file)) return BLAMED_PROBLEM;
    this.blamed.delete(index);
    return null;
  }

  /** Whether the scan found any file (if not, GStreamer reports the missing file itself). */
  get hasFiles(): boolean {
    return this.last >= this.settings.startIndex;
  }

  /**
   * The next segment to play, skipping bad files from the cursor on (each one passed to `skipped`). It ends before
   * the next bad file, or at the last file. Only a segment of all the files, none bad, may loop by itself as the user
   * configured: multifilesrc loops back to the index it started at, not to start-index. "end": only bad files were
   * left of a replay that does not loop; "unusable": every file is bad.
   */
  nextSegment(skipped: (bad: BadReplayFile) => void): ReplaySegment | "end" | "unusable" {
    const { startIndex, index, loop } = this.settings;
    for (let tried = 0; this.bad.has(this.next); tried++) {
      if (tried > this.last - startIndex) return "unusable";
      skipped(this.bad.get(this.next)!);
      if (this.next < this.last) this.next++;
      else if (loop) this.next = startIndex;
      else {
        this.next = index;
        return "end";
      }
    }
    let to = this.next;
    while (to < this.last && !this.bad.has(to + 1)) to++;
    const whole = this.next === startIndex && this.bad.size === 0;
    return { from: this.next, to, loop: loop && whole };
  }

  /**
   * After a segment's end of stream: moves past it, wrapping to start-index when the user's replay loops. Returns
   * whether the replay goes on (false: the user's replay really ended, and the next run starts over at its index).
   */
  segmentEnded(segment: ReplaySegment): boolean {
    const { startIndex, index, loop } = this.settings;
    if (!segment.loop && segment.to < this.last) {
      this.next = segment.to + 1;
      return true;
    }
    this.next = loop ? startIndex : index;
    return loop && !segment.loop;
  }

  /**
   * After a run that failed (error, stall) having delivered `frames` frames of `segment`: the next run resumes at
   * the file after the last delivered one, not at the start. With `blame` (a stall or a decoder error) that file is
   * the likely culprit: it is returned, skipped until it changes, and the next run starts after it. `failedIndex`,
   * when given, is the file a decoder failed on as the source reports it: it is the culprit instead, and the next
   * run starts at the first file not delivered, as a frame on its way when the error came was dropped with the
   * pipeline (seen in CI under load: 001's frame lost when 002 failed) and is played again.
   */
  runFailed(
    segment: ReplaySegment,
    frames: number,
    blame: boolean,
    failedIndex?: number,
  ): BadReplayFile | null {
    const { startIndex } = this.settings;
    const count = Math.max(1, this.last - startIndex + 1);
    let position = segment.loop
      ? startIndex + ((segment.from - startIndex + frames) % count)
      : segment.from + frames;
    if (position > this.last) position = startIndex;
    const after = (index: number) => (index >= this.last ? startIndex : index + 1);
    if (!blame) {
      this.next = position;
      return null;
    }
    let culprit = position;
    this.next = after(position);
    // the file a decoder failed on, when the source said: exact where the frames delivered may lag behind
    const first = segment.loop ? startIndex : segment.from;
    const lastOfSegment = segment.loop ? this.last : segment.to;
    if (failedIndex !== undefined && failedIndex >= first && failedIndex <= lastOfSegment) {
      culprit = failedIndex;
      this.next = position < failedIndex ? position : after(failedIndex);
    }
    const file = this.fileName(culprit);
    this.blamed.set(culprit, fileVersion(file));
    this.bad.set(culprit, { index: culprit, file, problem: BLAMED_PROBLEM });
    return { index: culprit, file, problem: "stopped the replay" };
  }
}
