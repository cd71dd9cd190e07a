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
