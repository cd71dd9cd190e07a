/**
 * The audit log over HTTP (docs/audit.md): `GET /api/audit` — every state change, newest first, filtered by time,
 * user, action and camera, a page at a time (`limit`, `cursor`). Parameters are validated against the TypeBox
 * definitions in `audit-api.ts` (the same ones the OpenAPI file is written from); a bad one is a 400 naming it.
 * Reading needs no login, like the part record.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ValidateFunction } from "ajv";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import type { AuditStore } from "../audit.js";
import { type AuditQueryParams, AuditQuerySchema, auditQuery } from "../audit-api.js";
import { reply } from "./http-reply.js";
import { queryParams, queryValidator } from "./query-params.js";

export class AuditApi {
  static readonly ROUTES = ["/api/audit"];
  private readonly validate: ValidateFunction<AuditQueryParams>;

  constructor(
    private readonly audit: AuditStore,
    private readonly logger: Logger,
  ) {
    this.validate = queryValidator<AuditQueryParams>(AuditQuerySchema);
  }

  serves(urlPath: string): boolean {
    return urlPath === "/api/audit";
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      reply(res, 405, `method ${req.method} not allowed; use GET\n`, { Allow: "GET, HEAD" });
      return;
    }
    const params = queryParams(req, res, this.validate);
    if (params === undefined) return;
    const query = auditQuery(params);
    if (typeof query === "string") {
      reply(res, 400, `${query}\n`);
      return;
    }
    try {
      const page = await this.audit.query(query);
      reply(res, 200, JSON.stringify(page), { "Content-Type": "application/json" });
    } catch (err) {
      this.logger.error({ err }, "reading the audit log");
      reply(res, 503, `${errorMessage(err)}\n`);
    }
  }
}
