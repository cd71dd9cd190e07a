/**
 * Where a label's files go, and writing and removing them. A record's frame is stored by the records thread as
 * `images/<camera>/<day>/<camera>_<capture time>_<seq>.png` at the inspected resolution (the ROI before the model's
 * resize); a label copies that PNG, byte for byte, to:
 *
 * - false alarm: `<collection.dir>/<camera>/<name>_false-alarm.png` (the camera's normal set, read by
 *   `stpmd retrain --frames`; the collector's rolling deletion leaves `_false-alarm` frames alone) and the labelled
 *   set's `<labelled_dir>/<camera>/test/good/<name>.png`;
 * - confirmed defect: `<labelled_dir>/<camera>/test/<defect type>/<name>.png` and its draft mask
 *   `<labelled_dir>/<camera>/ground_truth/<defect type>/<name>_mask.png` (MVTec AD layout: `stpmd eval --data
 *   <labelled_dir>/<camera>` reads it).
 *
 * Every file is written whole or not at all (temp + fsync + rename + directory fsync, core/durable-fs.ts) with the
 * configured modes: they are production images.
 */
import { rmdir, unlink } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { fsyncDirectory, makeDirectory, writeFileAtomic } from "../../core/durable-fs.js";
import type { Region } from "../../core/result.js";
import { tempPngName } from "../frame-png.js";
import type { Label, PartRecord } from "../records-api.js";

/** The suffix of a false alarm's frame in the normal set; the collector never deletes these. */
export const FALSE_ALARM_SUFFIX = "_false-alarm.png";

export interface LabelledDirs {
  /** `records.dir`: where the record's frames and maps are. */
  records: string;
  /** `records.labelled_dir`: the per-camera labelled sets. */
  labelled: string;
  /** `collection.dir`: the per-camera normal sets. */
  collection: string;
  /** Modes of the labelled set's files and folders (the records' modes). */
  labelledModes: { file: number; dir: number };
  /** Modes of the normal set's files and folders (the collection's modes). */
  collectionModes: { file: number; dir: number };
}

/** One file a label writes: where, with which bytes' source, in which folders (created in order). */
export interface PlannedFile {
  file: string;
  /** Folders from the set's root down to the file's, each created with `mode` if missing. */
  dirs: string[];
  dirMode: number;
  fileMode: number;
  kind: "frame" | "mask";
}

/** A camera id as a folder name: nothing that climbs out of the folder it is put in. */
function safeName(camera: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(camera) && !camera.includes("..");
}

/** The files a label of `record` writes, in writing order. Throws when the camera id is no folder name. */
export function plannedFiles(
  dirs: LabelledDirs,
  record: PartRecord,
  label: Label,
  defectType: string,
): PlannedFile[] {
  if (!safeName(record.camera)) throw new Error(`camera id "${record.camera}" cannot name a folder`);
  const name = path.basename(record.image ?? "", ".png");
  const set = path.join(dirs.labelled, record.camera);
  const labelled = { dirMode: dirs.labelledModes.dir, fileMode: dirs.labelledModes.file };
  if (label === "false_alarm") {
    const normal = path.join(dirs.collection, record.camera);
    return [
      {
        file: path.join(normal, `${name}${FALSE_ALARM_SUFFIX}`),
        dirs: [dirs.collection, normal],
        dirMode: dirs.collectionModes.dir,
        fileMode: dirs.collectionModes.file,
        kind: "frame",
      },
      {
        file: path.join(set, "test", "good", `${name}.png`),
        dirs: [dirs.labelled, set, path.join(set, "test"), path.join(set, "test", "good")],
        ...labelled,
        kind: "frame",
      },
    ];
  }
  return [
    {
      file: path.join(set, "test", defectType, `${name}.png`),
      dirs: [dirs.labelled, set, path.join(set, "test"), path.join(set, "test", defectType)],
      ...labelled,
      kind: "frame",
    },
    {
      file: path.join(set, "ground_truth", defectType, `${name}_mask.png`),
      dirs: [dirs.labelled, set, path.join(set, "ground_truth"), path.join(set, "ground_truth", defectType)],
      ...labelled,
      kind: "mask",
    },
  ];
}

/** A path the database holds, resolved inside the records directory; undefined when it would lie outside. */
export function insideRecords(dirs: LabelledDirs, relative: string): string | undefined {
  const root = path.resolve(dirs.records);
  const file = path.resolve(root, relative);
  return file.startsWith(`${root}${path.sep}`) ? file : undefined;
}

/**
 * The draft mask of a confirmed defect, as a PNG at the frame's resolution: the record's stored map thresholded at
 * the record's threshold. The map PNG is written on the frame's grid and scaled so that 128 is the threshold
 * (frame-png.ts, mapPng), so the mask is the map's pixels at 128 or above (a map of another size is scaled to the
 * frame's with nearest neighbours). A record without a map (a frame judged good, labelled a defect by a person)
 * gets its regions' boxes, and without regions an empty mask for the engineer to draw.
 */
export async function draftMask(
  framePng: Buffer,
  mapFile: string | undefined,
  regions: readonly Pick<Region, "bbox">[] | readonly { bbox: readonly number[] }[],
): Promise<Buffer> {
  const { width = 0, height = 0 } = await sharp(framePng).metadata();
  if (mapFile !== undefined) {
    // sharp's threshold: 255 at or above 128 (the record's threshold in the map's encoding), else 0
    return sharp(mapFile)
      .greyscale()
      .resize(width, height, { fit: "fill", kernel: "nearest" })
      .threshold(128)
      .toColourspace("b-w")
      .png()
      .toBuffer();
  }
  const mask = new Uint8Array(width * height);
  for (const { bbox } of regions) {
    const [x = 0, y = 0, w = 0, h = 0] = bbox.map(Math.round);
    for (let row = Math.max(0, y); row < Math.min(height, y + h); row++)
      for (let col = Math.max(0, x); col < Math.min(width, x + w); col++) mask[row * width + col] = 255;
  }
  return sharp(mask, { raw: { width, height, channels: 1 } })
    .toColourspace("b-w")
    .png()
    .toBuffer();
}

/**
 * Writes the planned files; on a failure removes those already written and rethrows, so a label is on disk whole
 * or not at all.
 */
export async function writeLabelFiles(
  planned: readonly PlannedFile[],
  contents: ReadonlyMap<PlannedFile["kind"], Uint8Array>,
): Promise<string[]> {
  const written: string[] = [];
  try {
    for (const p of planned) {
      for (const dir of p.dirs) await makeDirectory(dir, p.dirMode);
      await writeFileAtomic(
        p.file,
        path.join(path.dirname(p.file), tempPngName(path.basename(p.file))),
        contents.get(p.kind)!,
        { mode: p.fileMode, durable: true },
      );
      written.push(p.file);
    }
  } catch (err) {
    await removeLabelFiles(written);
    throw err;
  }
  return written;
}

/**
 * Removes exactly the given files (those a label wrote), then the folders of a labelled set that removal left
 * empty (`test/<type>/`, `ground_truth/<type>/`): an empty defect-type folder would stop `stpmd eval` with "holds no
 * images". Returns the files that were there to remove; one that cannot be removed (other than gone) throws.
 */
export async function removeLabelFiles(files: readonly string[]): Promise<string[]> {
  const removed: string[] = [];
  for (const file of files) {
    try {
      await unlink(file);
      removed.push(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const dir = path.dirname(file);
    await fsyncDirectory(dir).catch(() => undefined);
    if (["test", "ground_truth"].includes(path.basename(path.dirname(dir)))) {
      // only when empty: rmdir refuses a folder that still holds a file
      await rmdir(dir).catch(() => undefined);
    }
  }
  return removed;
}
