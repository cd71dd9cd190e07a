import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";

/** Answers a request with a complete body (text by default); HEAD gets the same headers and no body. */
export function reply(
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/**
 * Answers with the PNG at `file`: 404 when it is not there, 503 when it cannot be read (both naming `what` and the
 * error code), else the image with `cacheControl`.
 */
export async function replyPngFile(
  res: ServerResponse,
  file: string,
  what: string,
  cacheControl: string,
): Promise<void> {
  let png: Buffer;
  try {
    png = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    reply(res, code === "ENOENT" ? 404 : 503, `${what}: ${code ?? "unreadable"}\n`);
    return;
  }
  res.writeHead(200, {
    "Content-Type": "image/png",
    "Content-Length": png.length,
    "Cache-Control": cacheControl,
    "X-Content-Type-Options": "nosniff",
  });
  res.end(res.req.method === "HEAD" ? undefined : png);
}
