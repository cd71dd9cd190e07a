import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { cameraUnderRecipe, formatConfigSummary, loadConfig } from "../../src/config/index.js";
import { isStpmdError } from "../../src/core/errors.js";
import { tempDir } from "../helpers/tiny-data.js";

/** A config folder with two bundle directories (a manifest each: what the loader checks) and `yaml` as its file. */
async function configWith(yaml: string): Promise<string> {
  const dir = await tempDir("stpmd-recipes-config-");
  for (const name of ["bottle-a", "bottle-b"]) {
    fs.mkdirSync(path.join(dir, "models", name), { recursive: true });
    fs.writeFileSync(path.join(dir, "models", name, "manifest.json"), "{}");
  }
  const file = path.join(dir, "stpmd.yaml");
  fs.writeFileSync(file, yaml);
  return file;
}

const BASE = `model: { bundle: models/bottle-a }
mqtt: { url: mqtt://localhost }
cameras:
  - id: top
    source: videotestsrc
    threshold: { sigma: 3 }
  - id: side
    source: videotestsrc
`;

/** The problem lines of a config that must not load. */
function problems(file: string): string[] {
  try {
    loadConfig(file, {});
  } catch (err) {
    assert.ok(isStpmdError(err));
    return err.message
      .split("\n")
      .slice(1)
      .map((line) => line.trim());
  }
  assert.fail("the config loaded");
}

test("recipes load with their paths made absolute, and a camera's settings under a recipe are its own with the recipe's keys over them", async () => {
  const file = await configWith(`${BASE}recipes:
  bottle-b:
    top: { bundle: models/bottle-b, threshold: { value: 0.8 }, roi: { x: 0, y: 0, width: 64, height: 64 } }
    side: { enabled: false }
  plain: {}
active_recipe: bottle-b
`);
  const config = loadConfig(file, {});
  const dir = path.dirname(file);
  assert.equal(config.active_recipe, "bottle-b");
  assert.equal(config.recipes["bottle-b"]!.top!.bundle, path.join(dir, "models/bottle-b"));
  const [top, side] = config.cameras;
  const topB = cameraUnderRecipe(top!, config, "bottle-b");
  assert.equal(topB.model, path.join(dir, "models/bottle-b"));
  assert.deepEqual(topB.threshold, { value: 0.8 });
  assert.deepEqual(topB.roi, { x: 0, y: 0, width: 64, height: 64 });
  assert.equal(topB.source, "videotestsrc", "keys the recipe leaves out stay the camera's");
  assert.equal(cameraUnderRecipe(side!, config, "bottle-b").enabled, false);
  assert.deepEqual(cameraUnderRecipe(top!, config, "plain"), top, "a recipe without the camera leaves it");
  assert.deepEqual(cameraUnderRecipe(top!, config, undefined), top);
  assert.deepEqual(loadConfig(await configWith(BASE), {}).recipes, {}, "default: no recipes");
});

test("a recipe's problems name the recipe, the camera and the key", async () => {
  const file = await configWith(`${BASE}recipes:
  bottle-b:
    top: { bundle: models/missing, threshold: { sigma: -1 } }
    front: { enabled: false }
  can:
    side: { treshold: { value: 1 } }
active_recipe: bottle-c
`);
  const lines = problems(file);
  const missing = path.join(path.dirname(file), "models/missing");
  const expected = [
    /^recipes\.bottle-b\.top\.bundle: recipe "bottle-b", camera "top": .*models\/missing is not a model bundle \(.*manifest\.json: no such file \(ENOENT\)\)/,
    /^recipes\.bottle-b\.top\.threshold/,
    /^recipes\.bottle-b\.front: recipe "bottle-b" names camera "front", which is not in cameras \(known: top, side\)/,
    /^recipes\.can\.side\.treshold: unknown key \(did you mean threshold\?\)/,
    /^active_recipe: "bottle-c" is not one of recipes \(known: bottle-b, can\)/,
  ];
  for (const pattern of expected) {
    assert.ok(
      lines.some((line) => pattern.test(line)),
      `no problem matches ${pattern}:\n${lines.join("\n")}`,
    );
  }
  assert.ok(lines.join("\n").includes(missing));
});

test("recipe names are plain words", async () => {
  const lines = problems(await configWith(`${BASE}recipes:\n  "bad name": { top: {} }\n`));
  assert.ok(
    lines.some((line) => /recipes/.test(line) && /bad name/.test(line)),
    lines.join("\n"),
  );
});

test("config/recipes.yaml loads (its bundles and credential provided): two recipes over two cameras", async () => {
  const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../..");
  const dir = await tempDir("stpmd-recipes-example-");
  for (const name of ["bottle-330ml", "bottle-500ml-top", "bottle-500ml-side"]) {
    fs.mkdirSync(path.join(dir, name), { recursive: true });
    fs.writeFileSync(path.join(dir, name, "manifest.json"), "{}");
  }
  fs.writeFileSync(path.join(dir, "opcua_plc"), "secret\n");
  const text = fs
    .readFileSync(path.join(repoRoot, "config", "recipes.yaml"), "utf8")
    .replaceAll("/var/lib/stpmd/models/", `${dir}/`);
  const file = path.join(dir, "recipes.yaml");
  fs.writeFileSync(file, text);
  const config = loadConfig(file, { CREDENTIALS_DIRECTORY: dir });
  assert.deepEqual(Object.keys(config.recipes), ["bottle-330ml", "bottle-500ml"]);
  assert.equal(config.active_recipe, "bottle-330ml");
  const side = cameraUnderRecipe(config.cameras[1]!, config, "bottle-500ml");
  assert.equal(side.model, path.join(dir, "bottle-500ml-side"));
  assert.equal(side.score_aggregation, "smoothed_max");
  assert.match(
    formatConfigSummary(config),
    /^recipes: {4}bottle-330ml \(top\), bottle-500ml \(top, side\); at start bottle-330ml$/m,
  );
});
