/**
 * OPC 40100 result management: one record per inspected part (the ResultDataType's fields), a bounded in-memory
 * store of the last {@link RESULT_STORE} of them, and the filters of GetResultListFiltered. The records become the
 * specification's structures in machine-vision.ts; nothing here knows node-opcua.
 */
import type { InspectionResult } from "../../core/result.js";

/** ResultState values (OPC 40100: > 0 is application-specific "ok"-like, < 0 "not ok", 0 undefined). */
export const RESULT_STATE = { ok: 1, defect: -1, error: -2 } as const;

/**
 * How many results GetResultById / GetResultListFiltered answer from: the last 1,000 parts (a few minutes of a
 * fast line; about 0.6 MB of heap, some 600 bytes a record: benchmarks/opcua-result-store.ts). Older results are in
 * stpmd's records and events.
 */
export const RESULT_STORE = 1000;

/** What the view keeps of one inspected part: the ResultDataType's fields that stpmd has. */
export interface ResultRecord {
  /** `<camera>-<seq>-<n>`: n counts results since start, so the id is unique per start. */
  resultId: string;
  /** `<camera>-<seq>`: the job is the judging of one frame. */
  jobId: string;
  partId: string;
  /** The recipe it was judged under ("" for none: every camera's own settings). */
  recipe: string;
  /** The camera, as the InternalConfigurationId (stpmd's configuration unit of a result). */
  camera: string;
  state: (typeof RESULT_STATE)[keyof typeof RESULT_STATE];
  verdict: InspectionResult["verdict"];
  score: number;
  threshold: number;
  /** When the record was made (the result reached the interface). */
  creationTime: Date;
  /** Frame capture and end of inference: the ProcessingTimes. */
  startTime: Date;
  endTime: Date;
}

export function resultRecord(result: InspectionResult, n: number): ResultRecord {
  const frame = result.frame;
  return {
    resultId: `${frame.cameraId}-${frame.seq}-${n}`,
    jobId: `${frame.cameraId}-${frame.seq}`,
    partId: frame.partId ?? "",
    recipe: frame.recipe ?? "",
    camera: frame.cameraId,
    state: RESULT_STATE[result.verdict],
    verdict: result.verdict,
    score: result.score,
    threshold: result.threshold,
    creationTime: new Date(),
    startTime: new Date(frame.captureTs),
    endTime: new Date(result.inferredTs),
  };
}

/**
 * GetResultListFiltered's filters as stpmd applies them: 0 / "" means "any". stpmd records no MeasId or ProductId,
 * so a non-empty filter on one matches nothing; the recipe is both its external and internal id.
 */
export interface ResultFilter {
  state: number;
  measId: string;
  partId: string;
  externalRecipeId: string;
  internalRecipeId: string;
  externalConfigurationId: string;
  internalConfigurationId: string;
  productId: string;
  jobId: string;
}

function matches(record: ResultRecord, filter: ResultFilter): boolean {
  const any = (want: string, have: string) => want === "" || want === have;
  return (
    (filter.state === 0 || filter.state === record.state) &&
    filter.measId === "" &&
    filter.productId === "" &&
    any(filter.partId, record.partId) &&
    any(filter.externalRecipeId, record.recipe) &&
    any(filter.internalRecipeId, record.recipe) &&
    any(filter.externalConfigurationId, record.camera) &&
    any(filter.internalConfigurationId, record.camera) &&
    any(filter.jobId, record.jobId)
  );
}

export interface ResultPage {
  /** Every matching result is in this page or an earlier one (StartIndex + returned ≥ matching). */
  complete: boolean;
  /** How many stored results match the filter. */
  matching: number;
  records: ResultRecord[];
}

/** The last {@link RESULT_STORE} records, oldest first, with a lookup by result id. */
export class ResultStore {
  private readonly records: ResultRecord[] = [];
  private readonly byId = new Map<string, ResultRecord>();

  constructor(private readonly capacity = RESULT_STORE) {}

  add(record: ResultRecord): void {
    this.records.push(record);
    this.byId.set(record.resultId, record);
    if (this.records.length > this.capacity) {
      const dropped = this.records.shift()!;
      this.byId.delete(dropped.resultId);
    }
  }

  get(resultId: string): ResultRecord | undefined {
    return this.byId.get(resultId);
  }

  get size(): number {
    return this.records.length;
  }

  /** Matching records, oldest first, from `start` (an index into the matching ones), at most `max` (0: all). */
  list(filter: ResultFilter, start: number, max: number): ResultPage {
    const all = this.records.filter((record) => matches(record, filter));
    const end = max === 0 ? all.length : Math.min(all.length, start + max);
    const records = all.slice(start, end);
    return { complete: end >= all.length, matching: all.length, records };
  }
}
