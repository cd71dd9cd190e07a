/** Recipes (docs/recipes.md): per-camera overrides the line switches between at run time. */
import fs from "node:fs";
import path from "node:path";
import { describeFsError } from "./files.js";
import { isObject, type Problem } from "./problems.js";
import type { CameraConfig, RecipeCameraConfig, StpmdConfig } from "./schema.js";

/**
 * A camera's settings under `recipe` (undefined: the camera's own): each key the recipe sets for it replaces the
 * camera's own; `bundle` replaces the camera's `model`. A recipe that does not name the camera leaves it as it is.
 */
export function cameraUnderRecipe(
  camera: CameraConfig,
  config: Pick<StpmdConfig, "recipes">,
  recipe: string | undefined,
): CameraConfig {
  const overrides: RecipeCameraConfig | undefined =
    recipe === undefined ? undefined : config.recipes[recipe]?.[camera.id];
  if (overrides === undefined) return camera;
  const { bundle, ...rest } = overrides;
  return { ...camera, ...rest, ...(bundle !== undefined ? { model: bundle } : {}) };
}

/** The recipe names of a config, for messages ("known: a, b" or "none configured"). */
export function recipeNames(config: Pick<StpmdConfig, "recipes">): string {
  const names = Object.keys(config.recipes);
  return names.length > 0 ? names.join(", ") : "none configured";
}

/**
 * Cross-field rules of recipes the schema cannot state: every camera a recipe names exists, and `active_recipe` is
 * one of them. Written defensively: the data may also have failed the schema.
 */
export function recipeProblems(cfg: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  const recipes = isObject(cfg.recipes) ? cfg.recipes : {};
  const ids = new Set(
    (Array.isArray(cfg.cameras) ? cfg.cameras : []).flatMap((c) =>
      isObject(c) && typeof c.id === "string" ? [c.id] : [],
    ),
  );
  for (const [name, cameras] of Object.entries(recipes)) {
    if (!isObject(cameras)) continue;
    for (const id of Object.keys(cameras)) {
      if (!ids.has(id)) {
        problems.push({
          path: ["recipes", name, id],
          message: `recipe "${name}" names camera "${id}", which is not in cameras (known: ${[...ids].join(", ")})`,
        });
      }
    }
  }
  const active = cfg.active_recipe;
  if (typeof active === "string" && !(active in recipes)) {
    const known = Object.keys(recipes);
    problems.push({
      path: ["active_recipe"],
      message: `"${active}" is not one of recipes (${known.length > 0 ? `known: ${known.join(", ")}` : "none configured"})`,
    });
  }
  return problems;
}

/** Makes each recipe's bundle and mask paths absolute against the config file's directory. */
export function resolveRecipePaths(cfg: Record<string, unknown>, baseDir: string): void {
  if (!isObject(cfg.recipes)) return;
  for (const cameras of Object.values(cfg.recipes)) {
    if (!isObject(cameras)) continue;
    for (const overrides of Object.values(cameras)) {
      if (!isObject(overrides)) continue;
      if (typeof overrides.bundle === "string") overrides.bundle = path.resolve(baseDir, overrides.bundle);
      const ignore = overrides.ignore;
      if (isObject(ignore) && typeof ignore.mask === "string")
        ignore.mask = path.resolve(baseDir, ignore.mask);
    }
  }
}

/**
 * A recipe's bundle must be a bundle directory (its manifest there) when the file is read: a typo would otherwise
 * only show when the line switches products. Whether it loads is checked at the switch, by loading it.
 */
export function recipeBundleProblems(cfg: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  if (!isObject(cfg.recipes)) return problems;
  for (const [name, cameras] of Object.entries(cfg.recipes)) {
    if (!isObject(cameras)) continue;
    for (const [id, overrides] of Object.entries(cameras)) {
      const bundle = isObject(overrides) ? overrides.bundle : undefined;
      if (typeof bundle !== "string") continue;
      const manifest = path.join(bundle, "manifest.json");
      try {
        fs.accessSync(manifest, fs.constants.R_OK);
      } catch (err) {
        problems.push({
          path: ["recipes", name, id, "bundle"],
          message: `recipe "${name}", camera "${id}": ${bundle} is not a model bundle (${manifest}: ${describeFsError(err)})`,
        });
      }
    }
  }
  return problems;
}
