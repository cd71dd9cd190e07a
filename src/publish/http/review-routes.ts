/**
 * The review console's labels over HTTP (docs/records.md, Labels; docs/records-openapi.json):
 *
 * - `POST /api/records/<id>/label` {label, defect_type?}: label a record (a relabel replaces the old label's files);
 * - `DELETE /api/records/<id>/label`: undo its label;
 * - `POST /api/records/<id>/mask` {accept: true}: accept a confirmed defect's draft mask;
 * - `GET /api/review/counts`: frames labelled now, per camera and label.
 *
 * Every change is authorised by {@link Operators.authorize} (the one authentication of state-changing routes),
 * its body validated against the TypeBox definitions of `records-api.ts`, and done by the {@link ReviewService}.
 * A refusal is one line naming the record and why.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TSchema } from "@sinclair/typebox";
import { Ajv, type ValidateFunction } from "ajv";
import { LabelRequestSchema, MaskRequestSchema, type ReviewCounts } from "../records-api.js";
import { ReviewError, type ReviewService } from "../review/review.js";
import { reply } from "./http-reply.js";
import { type Operators, readBody } from "./operators.js";

const LABEL_ROUTE = /^\/api\/records\/([0-9]{1,15})\/(label|mask)$/;
const COUNTS_ROUTE = "/api/review/counts";
/** A label's body is a few dozen bytes. */
const MAX_BODY = 4096;

const json = (res: ServerResponse, status: number, body: unknown): void =>
  reply(res, status, JSON.stringify(body), { "Content-Type": "application/json" });

export class ReviewRoutes {
  static readonly ROUTES = ["/api/records/<id>/label", "/api/records/<id>/mask", COUNTS_ROUTE];
  private readonly validators: Record<"label" | "mask", ValidateFunction>;

  constructor(
    private readonly review: ReviewService,
    private readonly operators: Operators,
  ) {
    const ajv = new Ajv({ allErrors: false, strict: false });
    const compile = (schema: TSchema) => ajv.compile(schema);
    this.validators = { label: compile(LabelRequestSchema), mask: compile(MaskRequestSchema) };
  }

  serves(urlPath: string): boolean {
    return urlPath === COUNTS_ROUTE || LABEL_ROUTE.test(urlPath);
  }

  async handle(req: IncomingMessage, res: ServerResponse, urlPath: string): Promise<void> {
    if (urlPath === COUNTS_ROUTE) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        reply(res, 405, `method ${req.method} not allowed; use GET\n`, { Allow: "GET, HEAD" });
        return;
      }
      json(res, 200, this.counts());
      return;
    }
    const [, idText, which] = LABEL_ROUTE.exec(urlPath)!;
    const id = Number(idText);
    const allowed = which === "label" ? ["POST", "DELETE"] : ["POST"];
    if (!allowed.includes(req.method ?? "")) {
      reply(res, 405, `method ${req.method} not allowed; use ${allowed.join(" or ")}\n`, {
        Allow: allowed.join(", "),
      });
      return;
    }
    const action = req.method === "DELETE" ? "unlabel" : which === "mask" ? "accept_mask" : "label";
    const user = this.operators.authorize(req, res, `${action} record ${id}`);
    if (user === undefined) return;
    try {
      if (action === "unlabel") {
        json(res, 200, await this.review.unlabel(id, user));
        return;
      }
      const body = await this.body(req, which as "label" | "mask");
      if (typeof body === "string") {
        reply(res, 400, `${body}\n`);
        return;
      }
      if (action === "label") {
        const { label, defect_type } = body as {
          label: "false_alarm" | "confirmed_defect";
          defect_type?: string;
        };
        json(res, 200, await this.review.label(id, label, defect_type, user));
      } else {
        json(res, 200, await this.review.acceptMask(id, user));
      }
    } catch (err) {
      if (!(err instanceof ReviewError)) throw err;
      reply(res, err.status, `${err.message}\n`);
    }
  }

  counts(): ReviewCounts {
    return { cameras: this.review.labelCounts() };
  }

  /** The validated JSON body, or a line saying what is wrong with it. */
  private async body(req: IncomingMessage, which: "label" | "mask"): Promise<unknown> {
    const raw = await readBody(req, MAX_BODY);
    if (raw === undefined) return `the body is over ${MAX_BODY} bytes`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString("utf8"));
    } catch (err) {
      return `the body is not JSON: ${(err as Error).message}`;
    }
    const validate = this.validators[which];
    if (validate(parsed)) return parsed;
    const error = validate.errors?.[0];
    if (error?.keyword === "additionalProperties") {
      return `body: ${String((error.params as { additionalProperty: string }).additionalProperty)} is not a field of this request`;
    }
    return `body${error?.instancePath.replace(/\//g, ".") ?? ""}: ${error?.message ?? "invalid"}`;
  }
}
