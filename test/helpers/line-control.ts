import type { ThresholdRule } from "../../src/config/index.js";
import type { InspectionResult } from "../../src/core/result.js";
import { judge } from "../../src/pipeline/inspector.js";
import type {
  BundleSummary,
  CandidateView,
  EvidenceReport,
  JobView,
  ShadowView,
} from "../../src/publish/candidates.js";
import {
  type CameraSnapshot,
  ControlError,
  type LineControl,
  lastResultSnapshot,
  type ModelChangeOutcome,
  type NodeSnapshot,
  type ReloadOutcome,
  type Requester,
  type SinkStatus,
} from "../../src/publish/control.js";

/** A bundle summary for {@link TestLineControl.candidateViews} and the answers built from them. */
export function testBundleSummary(version: string): BundleSummary {
  return {
    model_version: version,
    student_sha256: "ab".repeat(32),
    created_at: "2026-12-01T00:00:00.000Z",
    threshold: 1,
    predicted_false_alarm_rate: 0.05,
  };
}

/** A camera's candidate view with live model "L" and, unless null, candidate "C"; no job, shadow or previous. */
export function testCandidateView(camera: string, candidate: string | null = "C"): CandidateView {
  return {
    camera,
    live: testBundleSummary("L"),
    candidate: candidate === null ? null : testBundleSummary(candidate),
    job: null,
    shadow: null,
    previous: null,
  };
}

/** What the control feeds results to: an output under test (its per-result and per-batch entry points). */
export interface ResultListener {
  onResult?(result: InspectionResult): void;
  onBatch?(size: number, inferenceMs: number): void;
}

/** One call a client made through the control, as the interface handed it over. */
export interface ControlCall {
  method:
    | "setThreshold"
    | "enableCamera"
    | "reload"
    | "setCollection"
    | "trigger"
    | "selectRecipe"
    | "startRetrain"
    | "cancelRetrain"
    | "setShadow"
    | "promote"
    | "rollback"
    | "discardCandidate";
  args: unknown[];
  by: Requester;
}

/**
 * An in-process LineControl for testing one output on its own with a real client: it keeps the state a
 * daemon would (thresholds, enables, pending triggers), records every call with who made it, and feeds results
 * to the interfaces under test. The daemon's own implementation is tested end to end in test/daemon.
 */
export class TestLineControl implements LineControl {
  readonly calls: ControlCall[] = [];
  readonly interfaces: ResultListener[] = [];
  readonly pendingTriggers = new Map<string, string[]>();
  collection = false;
  /** The outputs' health as the daemon's snapshot lists it (none unless a test sets some). */
  sinks: SinkStatus[] = [];
  /** The recipe in force, and the recipes the test control offers (each its own {value} threshold). */
  recipe: string | null = null;
  readonly recipes = new Map<string, number>([
    ["A", 0.5],
    ["B", 2],
  ]);
  /** False: the snapshot lists no model, as the daemon's does when no bundle could be loaded. */
  modelLoaded = true;
  private readonly cameras = new Map<string, CameraSnapshot>();
  private readonly started = Date.now();

  constructor(cameraIds: string[] = ["cam1", "cam2"], threshold = 0.5) {
    for (const id of cameraIds) {
      this.cameras.set(id, {
        id,
        enabled: true,
        state: "streaming",
        fps: 0,
        inspected: 0,
        defects: 0,
        errors: 0,
        restarts: 0,
        bad_frames: 0,
        dropped_frames: 0,
        bundle: "/models/test",
        recipe: null,
        model_version: "20261201T000000Z",
        threshold,
        threshold_rule: "bundle",
        part_score: "max",
        predicted_false_alarms: { false_alarms: 0, normals: 30, rate: 0, upper95: 0.095 },
      });
    }
  }

  /** Sets a camera's review counts, as the daemon's snapshot gives them when the HTTP sink serves labels. */
  setReview(id: string, review: NonNullable<CameraSnapshot["review"]>): void {
    this.camera(id).review = review;
  }

  /** Sets a camera's pipeline state, as the daemon's snapshot shows a camera restarting or stalled. */
  setCameraState(id: string, state: CameraSnapshot["state"]): void {
    this.camera(id).state = state;
  }

  /** Drops a camera, as a reload whose configuration no longer has it does. */
  removeCamera(id: string): void {
    this.cameras.delete(id);
  }

  private camera(id: string): CameraSnapshot {
    const cam = this.cameras.get(id);
    if (!cam)
      throw new ControlError(`unknown camera "${id}" (known: ${[...this.cameras.keys()].join(", ")})`);
    return cam;
  }

  snapshot(): NodeSnapshot {
    const cameras = [...this.cameras.values()].map((c) => ({ ...c }));
    return {
      uptime_s: (Date.now() - this.started) / 1000,
      fps: cameras.reduce((a, c) => a + c.fps, 0),
      inspected: cameras.reduce((a, c) => a + c.inspected, 0),
      dropped_frames: 0,
      ready: true,
      models: this.modelLoaded
        ? [{ bundle: "/models/test", model_version: "20261201T000000Z", student_sha256: "0".repeat(64) }]
        : [],
      recipe: this.recipe,
      recipes: [...this.recipes.keys()],
      outbox: { queued: 0, overflowed: 0, lost: 0 },
      collection: { enabled: this.collection, saved: 0, failed: 0, dropped: 0, deleted: 0 },
      audit: { ok: true, file: "/var/lib/stpmd/audit.jsonl", entries: 0, failures: 0 },
      cameras,
      sinks: this.sinks.map((sink) => ({ ...sink })),
      connections: { broker: null, sparkplug: null, opcua_sessions: null },
    };
  }

  setThreshold(
    camera: string,
    rule: ThresholdRule,
    by: Requester,
  ): { old: number | null; new: number | null } {
    this.calls.push({ method: "setThreshold", args: [camera, rule], by });
    const cam = this.camera(camera);
    if (!("value" in rule)) throw new ControlError("the test control applies only {value} thresholds");
    if (!(rule.value > 0) || !Number.isFinite(rule.value)) {
      throw new ControlError(`threshold ${rule.value} for camera "${camera}": must be a positive number`);
    }
    const old = cam.threshold;
    cam.threshold = rule.value;
    cam.threshold_rule = rule;
    return { old, new: rule.value };
  }

  async enableCamera(camera: string, enabled: boolean, by: Requester): Promise<void> {
    this.calls.push({ method: "enableCamera", args: [camera, enabled], by });
    const cam = this.camera(camera);
    cam.enabled = enabled;
    cam.state = enabled ? "streaming" : "disabled";
  }

  async reload(by: Requester): Promise<ReloadOutcome> {
    this.calls.push({ method: "reload", args: [], by });
    return { configApplied: true, problems: [], swapped: [], failed: [] };
  }

  setCollection(enabled: boolean, by: Requester): void {
    this.calls.push({ method: "setCollection", args: [enabled], by });
    this.collection = enabled;
  }

  /** Set: every recipe selection is refused with this reason (as the daemon's while it stops). */
  refuseRecipes: string | undefined;

  /** Selects a recipe of {@link recipes}: every camera's threshold becomes the recipe's (null keeps them). */
  async selectRecipe(
    name: string | null,
    by: Requester,
  ): Promise<{ old: string | null; new: string | null }> {
    this.calls.push({ method: "selectRecipe", args: [name], by });
    if (this.refuseRecipes !== undefined) throw new ControlError(this.refuseRecipes);
    const threshold = name === null ? undefined : this.recipes.get(name);
    if (name !== null && threshold === undefined) {
      throw new ControlError(`unknown recipe "${name}" (known: ${[...this.recipes.keys()].join(", ")})`);
    }
    const old = this.recipe;
    this.recipe = name;
    for (const cam of this.cameras.values()) {
      cam.recipe = name;
      if (threshold !== undefined) cam.threshold = threshold;
    }
    return { old, new: name };
  }

  /** Candidate views the test control answers (none unless a test sets some), and evidence by camera. */
  candidateViews: CandidateView[] = [];
  readonly evidenceReports = new Map<string, EvidenceReport>();
  /** Shadow images the test control answers, by `<camera>/<name>`: the file's path. */
  readonly shadowImages = new Map<string, string>();

  /** The candidate requests are recorded and answered from {@link candidateViews}; a camera without one is refused. */
  private candidateCall(
    method: ControlCall["method"],
    camera: string,
    by: Requester,
    args: unknown[],
  ): CandidateView {
    this.calls.push({ method, args: [camera, ...args], by });
    this.camera(camera);
    const view = this.candidateViews.find((v) => v.camera === camera);
    if (!view) throw new ControlError(`camera ${camera} has no candidate`);
    return view;
  }

  async startRetrain(camera: string, by: Requester): Promise<JobView> {
    this.calls.push({ method: "startRetrain", args: [camera], by });
    this.camera(camera);
    return {
      camera,
      state: "running",
      started_at: new Date().toISOString(),
      by: by.user ? `${by.via}:${by.user}` : by.via,
      epoch: 0,
      epochs: 2,
      loss: null,
      val_score: null,
      eta_s: null,
      frames: 20,
    };
  }

  async cancelRetrain(camera: string, by: Requester): Promise<JobView> {
    const job = this.candidateCall("cancelRetrain", camera, by, []).job;
    if (!job) throw new ControlError(`no retrain job is running for camera ${camera}`);
    return { ...job, state: "cancelled" };
  }

  async setShadow(camera: string, enabled: boolean, by: Requester): Promise<ShadowView | null> {
    return this.candidateCall("setShadow", camera, by, [enabled]).shadow;
  }

  async promote(camera: string, by: Requester, force?: boolean): Promise<ModelChangeOutcome> {
    const view = this.candidateCall("promote", camera, by, [force === true]);
    return { camera, before: view.live, after: view.candidate };
  }

  async rollback(camera: string, by: Requester): Promise<ModelChangeOutcome> {
    const view = this.candidateCall("rollback", camera, by, []);
    return { camera, before: view.live, after: view.previous };
  }

  async discardCandidate(camera: string, by: Requester): Promise<ModelChangeOutcome> {
    const view = this.candidateCall("discardCandidate", camera, by, []);
    return { camera, before: view.candidate, after: null };
  }

  candidates(): CandidateView[] {
    return this.candidateViews;
  }

  shadowImage(camera: string, name: string): string | null {
    this.camera(camera);
    return this.shadowImages.get(`${camera}/${name}`) ?? null;
  }

  async evidence(camera: string): Promise<EvidenceReport> {
    this.camera(camera);
    const report = this.evidenceReports.get(camera);
    if (!report) throw new ControlError(`camera ${camera} has no candidate`);
    return report;
  }

  trigger(camera: string, partId: string, by: Requester): void {
    this.calls.push({ method: "trigger", args: [camera, partId], by });
    this.camera(camera);
    const queue = this.pendingTriggers.get(camera) ?? [];
    queue.push(partId);
    this.pendingTriggers.set(camera, queue);
  }

  /**
   * Inspects one synthetic frame of `camera` as the daemon would: tags it with the oldest pending trigger's part
   * id, judges `score` against the camera's threshold (as the inspector does: a NaN score is an error verdict), counts it and hands the result to every interface.
   */
  emit(camera: string, score: number, seq?: number): InspectionResult {
    const cam = this.camera(camera);
    const partId = this.pendingTriggers.get(camera)?.shift();
    const threshold = cam.threshold ?? 0.5;
    const verdict = judge(score, threshold);
    const width = 16;
    const height = 16;
    const result: InspectionResult = {
      frame: {
        cameraId: camera,
        seq: seq ?? cam.inspected,
        captureTs: Date.now(),
        width,
        height,
        rgb: new Uint8Array(width * height * 3),
        ...(partId !== undefined ? { partId } : {}),
        ...(this.recipe !== null ? { recipe: this.recipe } : {}),
      },
      score,
      threshold,
      verdict,
      regions: verdict === "defect" ? [{ bbox: [2, 3, 4, 5], area: 20, peak: score, centroid: [4, 5] }] : [],
      map: new Float32Array(width * height),
      modelVersion: cam.model_version ?? "",
      inferredTs: Date.now(),
    };
    cam.inspected += 1;
    if (verdict === "defect") cam.defects += 1;
    if (verdict === "error") cam.errors += 1;
    cam.last = lastResultSnapshot({
      seq: result.frame.seq,
      captureTs: result.frame.captureTs,
      score,
      threshold,
      verdict,
      regions: result.regions.length,
      ...(partId !== undefined ? { partId } : {}),
      ...(this.recipe !== null ? { recipe: this.recipe } : {}),
    });
    for (const i of this.interfaces) i.onResult?.(result);
    return result;
  }
}
