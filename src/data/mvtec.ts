import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { StpmdError } from "../core/errors.js";
import { listImages } from "./images.js";

export interface TestSample {
  file: string;
  /** "good" or the defect type folder name. */
  kind: string;
  label: 0 | 1;
  /** Ground-truth mask file for defective samples; undefined for good ones. */
  maskFile: string | undefined;
}

/**
 * The test split of an MVTec AD category: `test/<good|defect>/*.png` with masks at
 * `ground_truth/<defect>/<name>_mask.png`. `dir` may be the category root or its `test` folder; `name` is how
 * problems with it as a whole are named (e.g. the option that gave it).
 */
export async function listMvtecTest(dir: string, name = dir): Promise<TestSample[]> {
  const root =
    path.basename(path.resolve(dir)) === "test" ? path.dirname(path.resolve(dir)) : path.resolve(dir);
  const testDir = path.join(root, "test");
  const isDir = await stat(testDir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) {
    throw new StpmdError(
      "ERR_INPUT_MISSING",
      `${name}: no test/ folder (expected MVTec AD layout: test/<good|defect>/, ground_truth/<defect>/)`,
    );
  }
  const kinds = (await readdir(testDir, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  const samples: TestSample[] = [];
  for (const kind of kinds) {
    for (const file of await listImages(path.join(testDir, kind), `test/${kind} folder`)) {
      if (kind === "good") {
        samples.push({ file, kind, label: 0, maskFile: undefined });
        continue;
      }
      const stem = path.basename(file, path.extname(file));
      const maskFile = path.join(root, "ground_truth", kind, `${stem}_mask.png`);
      const exists = await stat(maskFile).then(
        () => true,
        () => false,
      );
      if (!exists)
        throw new StpmdError("ERR_INPUT_MISSING", `${file}: its ground-truth mask ${maskFile} is missing`);
      samples.push({ file, kind, label: 1, maskFile });
    }
  }
  const good = samples.filter((s) => s.label === 0).length;
  const defective = samples.length - good;
  if (good === 0 || defective === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `${name}: ${testDir} holds ${good} good and ${defective} defective images; evaluating needs both ` +
        "(good parts in test/good/, defective ones in test/<defect type>/ with masks in ground_truth/<defect type>/)",
    );
  }
  return samples;
}
