import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle } from "../../../src/bundle/bundle.js";
import { repairInterruptedSwap } from "../../../src/stations/candidates/promotion.js";
import { CandidateStore } from "../../../src/stations/candidates/store.js";
import { writeTinyBundle } from "../../helpers/tiny-bundle.js";
import { tempDir } from "../../helpers/tiny-data.js";

async function world() {
  const root = await tempDir("stpmd-swap-");
  const live = path.join(root, "models", "cam1");
  const store = new CandidateStore(path.join(root, "candidates"));
  const p = store.paths("cam1");
  await mkdir(p.root, { recursive: true });
  await writeTinyBundle(live, "old");
  await writeTinyBundle(p.previous, "older");
  return { live, store, p };
}

const version = async (dir: string) => (await loadBundle(dir)).manifest.model_version;

test("a promotion killed between its renames: the live bundle is put back from previous/", async () => {
  const { live, store, p } = await world();
  await rm(p.previous, { recursive: true }); // the old previous is removed first
  await rename(live, p.previous); // …then the live bundle moved to previous/, and the kill
  assert.equal(existsSync(live), false);
  const done = await repairInterruptedSwap(store, "cam1", live);
  assert.match(done ?? "", /was missing .*put back from .*previous/);
  assert.equal(await version(live), "old");
  assert.equal(await repairInterruptedSwap(store, "cam1", live), undefined, "nothing left to repair");
});

test("a rollback killed after parking the live bundle: undone; killed after its second rename: finished", async () => {
  const first = await world();
  await rename(first.live, path.join(first.p.root, "rollback-aside"));
  await repairInterruptedSwap(first.store, "cam1", first.live);
  assert.equal(await version(first.live), "old");
  assert.equal(await version(first.p.previous), "older");

  const second = await world();
  await rename(second.live, path.join(second.p.root, "rollback-aside"));
  await rename(second.p.previous, second.live);
  const done = await repairInterruptedSwap(second.store, "cam1", second.live);
  assert.match(done ?? "", /interrupted rollback/);
  assert.equal(await version(second.live), "older");
  assert.equal(await version(second.p.previous), "old");
  assert.equal(existsSync(path.join(second.p.root, "rollback-aside")), false);
});
