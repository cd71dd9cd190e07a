/**
 * The console's typed client of the daemon's HTTP API. Every type comes from the server's own definitions
 * (`import type`: nothing of the server is bundled), so a change there fails this build instead of the page.
 * A refusal or an error is thrown as an {@link ApiError} carrying the server's one-line answer.
 */

import type { AuditEntry, AuditPage } from "../../../src/publish/audit.js";
import type { AuditQueryParams } from "../../../src/publish/audit-api.js";
import type {
  BundleSummary,
  CandidateView,
  Disagreement,
  EvidenceReport,
  Gate,
  JobView,
  OfflineEval,
  ShadowView,
} from "../../../src/publish/candidates.js";
import type { CameraSnapshot, NodeSnapshot } from "../../../src/publish/control.js";
import type { ConsoleResultEvent, ConsoleStatus } from "../../../src/publish/http/console.js";
import type { SessionInfo } from "../../../src/publish/http/operators.js";
import type {
  ExportQuery,
  HourlyQuery,
  HourlyReply,
  HourlyRow,
  Label,
  LabelReply,
  MaskReply,
  PartRecord,
  RecordsPage,
  RecordsQuery,
  ReviewCounts,
  UnlabelReply,
} from "../../../src/publish/records-api.js";
import type { CommandResponsePayload } from "../../../src/publish/topics.js";

/** `GET /api/candidates`: one view per configured camera. */
export interface CandidatesReply {
  cameras: CandidateView[];
}

/** `GET /api/audit`'s query: the server's own parameters (`limit` has a default there). */
export type AuditQuery = Partial<AuditQueryParams>;

export type {
  AuditEntry,
  AuditPage,
  BundleSummary,
  CameraSnapshot,
  CandidateView,
  ConsoleResultEvent,
  ConsoleStatus,
  Disagreement,
  EvidenceReport,
  Gate,
  HourlyRow,
  JobView,
  Label,
  LabelReply,
  MaskReply,
  NodeSnapshot,
  OfflineEval,
  PartRecord,
  RecordsPage,
  ReviewCounts,
  SessionInfo,
  ShadowView,
  UnlabelReply,
};

/** A request the server refused or failed: `message` is its one-line answer. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** The CSRF token of the session this page holds (set by login and by the session check on load). */
let csrfToken: string | undefined;

function query(params: object): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text === "" ? "" : `?${text}`;
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = (await res.text().catch(() => "")).trim();
  return new ApiError(res.status, text.split("\n", 1)[0] || `${res.status} ${res.statusText}`);
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { "X-Stpmd-Console": "1" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (csrfToken !== undefined) headers["X-CSRF-Token"] = csrfToken;
  }
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new ApiError(0, `the daemon does not answer (${(err as Error).message})`);
  }
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const api = {
  status: () => request<ConsoleStatus>("GET", "/api/status"),

  /** Logs in; the cookie is set by the server, the CSRF token kept here. */
  async login(username: string, password: string): Promise<SessionInfo> {
    const session = await request<SessionInfo>("POST", "/api/session", { username, password });
    csrfToken = session.csrf_token;
    return session;
  },
  /** The session this browser holds, or undefined when not logged in. */
  async session(): Promise<SessionInfo | undefined> {
    try {
      const session = await request<SessionInfo>("GET", "/api/session");
      csrfToken = session.csrf_token;
      return session;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        csrfToken = undefined;
        return undefined;
      }
      throw err;
    }
  },
  async logout(): Promise<void> {
    await request<void>("DELETE", "/api/session");
    csrfToken = undefined;
  },

  /** Runs a command; a refused one (400) is an answer with its error, not a throw. */
  async command(name: string, body: object): Promise<CommandResponsePayload> {
    try {
      return await request<CommandResponsePayload>("POST", `/api/command/${encodeURIComponent(name)}`, body);
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) {
        try {
          return JSON.parse(err.message) as CommandResponsePayload;
        } catch {
          // not the executor's JSON answer: a plain refusal
        }
      }
      throw err;
    }
  },

  records: (q: Partial<RecordsQuery>) => request<RecordsPage>("GET", `/api/records${query(q)}`),
  /** One record by id, or undefined when there is none. */
  async record(id: number): Promise<PartRecord | undefined> {
    const page = await request<RecordsPage>("GET", `/api/records${query({ id, limit: 1 })}`);
    return page.records[0];
  },
  hourly: (q: HourlyQuery) => request<HourlyReply>("GET", `/api/records/hourly${query(q)}`),
  imageUrl: (id: number, which: "image" | "map") => `/api/records/${id}/${which}.png`,
  /**
   * A download of the record's range as `stpmd records export` writes it. `since` may be a duration (`1h`): the
   * daemon counts it back from the moment the link is followed, so a page left open never exports a stale hour.
   */
  exportUrl: (format: "csv" | "jsonl", q: ExportQuery) => `/api/records/export.${format}${query(q)}`,
  cameraImageUrl: (camera: string, kind: "last" | "defect", seq: number) =>
    `/api/cameras/${encodeURIComponent(camera)}/${kind}.jpg?seq=${seq}`,

  label: (id: number, label: Label, defectType?: string) =>
    request<LabelReply>("POST", `/api/records/${id}/label`, {
      label,
      ...(defectType !== undefined ? { defect_type: defectType } : {}),
    }),
  unlabel: (id: number) => request<UnlabelReply>("DELETE", `/api/records/${id}/label`),
  acceptMask: (id: number) => request<MaskReply>("POST", `/api/records/${id}/mask`, { accept: true }),

  reviewCounts: () => request<ReviewCounts>("GET", "/api/review/counts"),

  /** Every camera's live model, candidate, retrain job, shadow run and previous model (issue 22). */
  candidates: () => request<CandidatesReply>("GET", "/api/candidates"),
  /** The evidence that compares a camera's candidate with its live model (404 when it has no candidate). */
  evidence: (camera: string) =>
    request<EvidenceReport>("GET", `/api/candidates/${encodeURIComponent(camera)}/report`),

  audit: (q: AuditQuery) => request<AuditPage>("GET", `/api/audit${query(q)}`),
};
