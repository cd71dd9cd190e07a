/**
 * Candidate models over HTTP, the read side (docs/candidates.md); actions go through `POST /api/command/<name>`:
 *
 * - `GET /api/candidates`: every camera's {@link CandidateView} (`{ cameras: [...] }`);
 * - `GET /api/candidates/<camera>/report`: the camera's {@link EvidenceReport}, 404 naming it without a candidate;
 * - `GET /api/candidates/<camera>/images/<file>.png`: a disagreement frame or map the shadow kept.
 *
 * Everything comes through the line's control, as for every other reader. Reading needs no login, like the part
 * record and its images.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { ControlError, type LineControl } from "../control.js";
import { reply, replyPngFile } from "./http-reply.js";

const REPORT_ROUTE = /^\/api\/candidates\/([^/]+)\/report$/;
const IMAGE_ROUTE = /^\/api\/candidates\/([^/]+)\/images\/([^/]+)$/;
/**
 * A name that can only be a file's in one folder: letters, digits, `-`, `_` and `.`, ending in .png, never `..`.
 * Checked before the control is asked, which knows where (and how) the shadow keeps its images.
 */
const IMAGE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.png$/;

export class CandidatesApi {
  static readonly ROUTES = [
    "/api/candidates",
    "/api/candidates/<camera>/report",
    "/api/candidates/<camera>/images/<file>.png",
  ];

  constructor(
    private readonly control: LineControl,
    private readonly logger: Logger,
  ) {}

  serves(urlPath: string): boolean {
    return urlPath === "/api/candidates" || urlPath.startsWith("/api/candidates/");
  }

  async handle(req: IncomingMessage, res: ServerResponse, urlPath: string): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      reply(res, 405, `method ${req.method} not allowed; use GET (actions: POST /api/command/<name>)\n`, {
        Allow: "GET, HEAD",
      });
      return;
    }
    if (urlPath === "/api/candidates") {
      json(res, { cameras: this.control.candidates() });
      return;
    }
    const report = REPORT_ROUTE.exec(urlPath);
    if (report) {
      await this.report(res, decode(report[1]!));
      return;
    }
    const image = IMAGE_ROUTE.exec(urlPath);
    if (image) {
      await this.image(res, decode(image[1]!), decode(image[2]!));
      return;
    }
    reply(res, 404, `not found: ${urlPath} (routes: ${CandidatesApi.ROUTES.join(", ")})\n`);
  }

  private async report(res: ServerResponse, camera: string): Promise<void> {
    try {
      json(res, await this.control.evidence(camera));
    } catch (err) {
      if (!(err instanceof ControlError)) {
        this.logger.error({ camera, err }, "building the evidence report");
        reply(res, 503, `camera ${camera}: ${errorMessage(err)}\n`);
        return;
      }
      reply(res, 404, `${err.message}\n`);
    }
  }

  private async image(res: ServerResponse, camera: string, file: string): Promise<void> {
    if (!IMAGE_NAME.test(file) || file.includes("..")) {
      reply(
        res,
        400,
        `image name ${JSON.stringify(file)}: not a shadow image's name (letters, digits, - _ ., .png)\n`,
      );
      return;
    }
    let image: string | null;
    try {
      image = this.control.shadowImage(camera, file);
    } catch (err) {
      if (!(err instanceof ControlError)) throw err;
      reply(res, 404, `${err.message}\n`);
      return;
    }
    const what = `camera ${camera}: image ${file}`;
    if (image === null) reply(res, 404, `${what}: the shadow kept no such image\n`);
    else await replyPngFile(res, image, what, "private, max-age=3600");
  }
}

function json(res: ServerResponse, body: unknown): void {
  reply(res, 200, JSON.stringify(body), { "Content-Type": "application/json" });
}

/** A path segment as sent; an undecodable one is kept as is (it then matches no camera or name). */
function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
