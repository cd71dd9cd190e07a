import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { createLogger } from "../../../src/core/log.js";
import type { EvidenceReport } from "../../../src/publish/candidates.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl, testBundleSummary, testCandidateView } from "../../helpers/line-control.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";
import { tempDir } from "../../helpers/tiny-data.js";

test("GET /api/candidates, …/<camera>/report and …/images/<file>: views, the report, 404s naming the camera, names checked", async () => {
  const dir = await tempDir("stpmd-cand-routes-");
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  await writeFile(path.join(dir, "12-frame.png"), png);
  const control = new TestLineControl(["cam1", "cam2"]);
  // where the shadow keeps its images is the control's to say (tested in shadow.test.ts); one file is gone
  control.shadowImages.set("cam1/12-frame.png", path.join(dir, "12-frame.png"));
  control.shadowImages.set("cam1/14-frame.png", path.join(dir, "14-frame.png"));
  control.candidateViews = [testCandidateView("cam1"), testCandidateView("cam2", null)];
  const report: EvidenceReport = {
    camera: "cam1",
    generated_at: "2026-12-01T00:00:00.000Z",
    live: testBundleSummary("L"),
    candidate: testBundleSummary("C"),
    shadow: null,
    labelled: null,
    gates: [{ name: "recall_at_least_live", pass: null, detail: "no labelled defects" }],
    promotable: true,
  };
  control.evidenceReports.set("cam1", report);
  const port = await freeLoopbackPort();
  const config = testConfig({ http: { enabled: true, port } });
  const http = new HttpInterface({
    config: config.http,
    control,
    logger: createLogger("silent"),
    processMetrics: false,
  });
  await http.start();
  const get = async (route: string, method = "GET") => {
    const res = await fetch(`http://127.0.0.1:${port}${route}`, { method });
    return {
      status: res.status,
      type: res.headers.get("content-type"),
      body: Buffer.from(await res.arrayBuffer()),
    };
  };
  try {
    const all = await get("/api/candidates");
    assert.equal(all.status, 200);
    assert.deepEqual(JSON.parse(all.body.toString()), { cameras: control.candidateViews });
    const r = await get("/api/candidates/cam1/report");
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body.toString()), report);
    const none = await get("/api/candidates/cam2/report");
    assert.deepEqual([none.status, none.body.toString()], [404, "camera cam2 has no candidate\n"]);
    const image = await get("/api/candidates/cam1/images/12-frame.png");
    assert.deepEqual([image.status, image.type], [200, "image/png"]);
    assert.deepEqual(image.body, png);
    const unknown = await get("/api/candidates/cam1/images/13-frame.png");
    assert.deepEqual(
      [unknown.status, unknown.body.toString()],
      [404, "camera cam1: image 13-frame.png: the shadow kept no such image\n"],
    );
    const gone = await get("/api/candidates/cam1/images/14-frame.png");
    assert.deepEqual([gone.status, gone.body.toString()], [404, "camera cam1: image 14-frame.png: ENOENT\n"]);
    const noCamera = await get("/api/candidates/cam9/images/12-frame.png");
    assert.equal(noCamera.status, 404);
    assert.match(noCamera.body.toString(), /unknown camera "cam9"/);
    // names that could leave the images' folder: refused by name
    for (const name of ["..%2Fjob.json", "..%2F..%2Fcam1%2Fjob.json", "job.json", "a..png", ".hidden.png"]) {
      const res = await get(`/api/candidates/cam1/images/${name}`);
      assert.equal(res.status, 400, name);
      assert.match(res.body.toString(), /not a shadow image's name/);
    }
    assert.equal((await get("/api/candidates", "POST")).status, 405);
  } finally {
    await http.stop();
  }
});
