import assert from "node:assert/strict";
import { test } from "node:test";
import {
  RESULT_STATE,
  type ResultFilter,
  ResultStore,
  resultRecord,
} from "../../../src/publish/opcua/machine-vision-results.js";
import { TestLineControl } from "../../helpers/line-control.js";

const ANY: ResultFilter = {
  state: 0,
  measId: "",
  partId: "",
  externalRecipeId: "",
  internalRecipeId: "",
  externalConfigurationId: "",
  internalConfigurationId: "",
  productId: "",
  jobId: "",
};

/** Records of real results: cam1 ok P-0, cam2 defect P-1 (under recipe B), cam1 ok P-2, … */
async function records(n: number) {
  const control = new TestLineControl(["cam1", "cam2"]);
  const out = [];
  for (let i = 0; i < n; i++) {
    const camera = i % 2 === 0 ? "cam1" : "cam2";
    if (i === 1) await control.selectRecipe("B", { via: "http" });
    if (i === 2) await control.selectRecipe(null, { via: "http" });
    control.trigger(camera, `P-${i}`, { via: "opcua" });
    out.push(resultRecord(control.emit(camera, i === 1 ? 5 : 0.1), i + 1));
  }
  return out;
}

test("resultRecord: ids, part, recipe, camera, state and the processing times of a result", async () => {
  const [ok, defect] = await records(2);
  assert.equal(ok!.resultId, "cam1-0-1");
  assert.equal(ok!.jobId, "cam1-0");
  assert.deepEqual([ok!.partId, ok!.recipe, ok!.camera, ok!.state], ["P-0", "", "cam1", RESULT_STATE.ok]);
  assert.deepEqual(
    [defect!.partId, defect!.recipe, defect!.camera, defect!.state, defect!.score, defect!.threshold],
    ["P-1", "B", "cam2", RESULT_STATE.defect, 5, 2],
  );
  assert.ok(ok!.startTime.getTime() <= ok!.endTime.getTime());
});

test("ResultStore keeps the last N results, by id and in order", async () => {
  const store = new ResultStore(3);
  const all = await records(5);
  for (const record of all) store.add(record);
  assert.equal(store.size, 3);
  assert.equal(store.get(all[1]!.resultId), undefined, "dropped with its place");
  assert.equal(store.get(all[4]!.resultId)?.partId, "P-4");
  assert.deepEqual(
    store.list(ANY, 0, 0).records.map((r) => r.partId),
    ["P-2", "P-3", "P-4"],
  );
});

test("ResultStore.list filters, pages and says when the list is complete", async () => {
  const store = new ResultStore();
  for (const record of await records(6)) store.add(record);
  const parts = (filter: Partial<ResultFilter>, start = 0, max = 0) => {
    const page = store.list({ ...ANY, ...filter }, start, max);
    return [page.complete, page.matching, page.records.map((r) => r.partId)];
  };
  assert.deepEqual(parts({ partId: "P-3" }), [true, 1, ["P-3"]]);
  assert.deepEqual(parts({ state: RESULT_STATE.defect }), [true, 1, ["P-1"]]);
  assert.deepEqual(parts({ internalRecipeId: "B" }), [true, 1, ["P-1"]]);
  assert.deepEqual(parts({ externalRecipeId: "B" }), [true, 1, ["P-1"]]);
  assert.deepEqual(parts({ internalConfigurationId: "cam2" }), [true, 3, ["P-1", "P-3", "P-5"]]);
  assert.deepEqual(parts({ jobId: "cam1-0" }), [true, 1, ["P-0"]]);
  // stpmd records no MeasId or ProductId: a filter on one matches nothing
  assert.deepEqual(parts({ measId: "M" }), [true, 0, []]);
  assert.deepEqual(parts({ productId: "X" }), [true, 0, []]);
  assert.deepEqual(parts({}, 0, 4), [false, 6, ["P-0", "P-1", "P-2", "P-3"]]);
  assert.deepEqual(parts({}, 4, 4), [true, 6, ["P-4", "P-5"]]);
  assert.deepEqual(parts({}, 10, 4), [true, 6, []]);
});
