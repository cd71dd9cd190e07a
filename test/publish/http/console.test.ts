import assert from "node:assert/strict";
import fs from "node:fs";
import http, { type IncomingMessage } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Registry } from "prom-client";
import sharp from "sharp";
import type { ConsoleConfig } from "../../../src/config/index.js";
import type { Logger } from "../../../src/core/log.js";
import type { InspectionResult } from "../../../src/core/result.js";
import type { NodeSnapshot } from "../../../src/publish/control.js";
import { loadConsoleAssets } from "../../../src/publish/http/console.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import {
  LOGIN_LOCKOUT_MS,
  LoginGuard,
  MAX_FAILED_LOGINS,
  MAX_SESSIONS,
  Operators,
} from "../../../src/publish/http/operators.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { capturingLogger } from "../../helpers/logs.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

async function consoleServer(
  control: TestLineControl,
  console: Partial<ConsoleConfig>,
  logger: Logger,
): Promise<{ http: HttpInterface; base: string }> {
  const server = new HttpInterface({
    config: {
      enabled: true,
      bind: "127.0.0.1",
      port: await freeLoopbackPort(),
      console: { enabled: true, users: [], max_clients: 8, session_idle_min: 720, ...console },
    },
    control,
    logger,
    processMetrics: false,
  });
  await server.start();
  control.interfaces.push(server);
  return { http: server, base: `http://127.0.0.1:${server.address.port}` };
}

/** A frame with a horizontal grey ramp and a map that is hot (3× the threshold) in a 8×8 square at (x0, y0). */
function gradientResult(
  camera: string,
  seq: number,
  width: number,
  height: number,
  hot?: [number, number],
): InspectionResult {
  const rgb = new Uint8Array(width * height * 3);
  const map = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      rgb.fill(Math.round((x / (width - 1)) * 200), (y * width + x) * 3, (y * width + x) * 3 + 3);
      if (hot && x >= hot[0] && x < hot[0] + 8 && y >= hot[1] && y < hot[1] + 8) map[y * width + x] = 1.5;
    }
  }
  return {
    frame: { cameraId: camera, seq, captureTs: Date.now(), width, height, rgb },
    score: hot ? 1.5 : 0.1,
    threshold: 0.5,
    verdict: hot !== undefined ? "defect" : "ok",
    regions: hot
      ? [{ bbox: [hot[0], hot[1], 8, 8], area: 64, peak: 1.5, centroid: [hot[0] + 4, hot[1] + 4] }]
      : [],
    map,
    modelVersion: "v1",
    inferredTs: Date.now(),
  };
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

async function post(
  base: string,
  name: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(`${base}/api/command/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body,
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** `POST /api/session` with a name and password (or a raw body), as the console's login form sends it. */
async function login(
  base: string,
  username: string,
  password: string,
  raw?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(`${base}/api/session`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: raw ?? JSON.stringify({ username, password }),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The `name=value` of a response's Set-Cookie, as a browser sends it back. */
function cookieOf(headers: Headers): string {
  return (headers.get("set-cookie") ?? "").split(";", 1)[0]!;
}

/** An event-stream client that parses events as they arrive; `pause()` stops reading the socket. */
class EventClient {
  readonly events: { event: string; data: unknown }[] = [];
  response!: IncomingMessage;
  private buffer = "";

  static async open(base: string): Promise<EventClient> {
    const client = new EventClient();
    client.response = await new Promise<IncomingMessage>((resolve, reject) => {
      http.get(`${base}/api/events`, resolve).on("error", reject);
    });
    client.response.setEncoding("utf8");
    client.response.on("data", (chunk: string) => client.parse(chunk));
    return client;
  }

  private parse(chunk: string): void {
    this.buffer += chunk;
    for (let end = this.buffer.indexOf("\n\n"); end >= 0; end = this.buffer.indexOf("\n\n")) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event !== undefined && data !== undefined) this.events.push({ event, data: JSON.parse(data) });
    }
  }

  of(kind: string): unknown[] {
    return this.events.filter((e) => e.event === kind).map((e) => e.data);
  }

  close(): void {
    this.response.destroy();
  }
}

async function metricsText(base: string): Promise<string> {
  return (await fetch(`${base}/metrics`)).text();
}

/** Waits until the server counts `n` open event streams (a closed client is noticed asynchronously). */
async function openStreams(base: string, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await (await fetch(`${base}/metrics`)).text();
    if (new RegExp(`^stpmd_console_streams ${n}$`, "m").test(text)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} open streams`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("web console", () => {
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  const { logger, lines } = capturingLogger();
  let server: HttpInterface;
  let base: string;

  before(async () => {
    const dir = await tempDir("stpmd-console-");
    fs.writeFileSync(path.join(dir, "alice"), "s3cret pass\n");
    ({ http: server, base } = await consoleServer(
      control,
      { users: [{ username: "alice", password_file: path.join(dir, "alice") }], max_clients: 3 },
      logger,
    ));
  });

  after(async () => {
    await server.stop();
  });

  test("serves the built page (index never cached, hashed assets for good) with a strict content policy, and the node's snapshot", async () => {
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    assert.equal(page.headers.get("cache-control"), "no-store");
    const html = await page.text();
    const script = /<script type="module" crossorigin src="(\/assets\/index-[\w-]+\.js)"><\/script>/.exec(
      html,
    )?.[1];
    const style = /<link rel="stylesheet" crossorigin href="(\/assets\/index-[\w-]+\.css)">/.exec(html)?.[1];
    assert.ok(script !== undefined && style !== undefined, html);
    assert.doesNotMatch(html, /https?:\/\//, "nothing is loaded from elsewhere");
    for (const [asset, type] of [
      [script, /^text\/javascript/],
      [style, /^text\/css/],
    ] as const) {
      const res = await fetch(`${base}${asset}`);
      assert.equal(res.status, 200, asset);
      assert.match(res.headers.get("content-type") ?? "", type);
      assert.equal(res.headers.get("cache-control"), "public, max-age=31536000, immutable");
      const text = await res.text();
      assert.ok(text.length > 1000, asset);
      assert.doesNotMatch(
        text,
        /https?:\/\/(?!www\.w3\.org)[a-z]/,
        `${asset} fetches nothing from the internet`,
      );
    }
    assert.equal((await fetch(`${base}/assets/nothing.js`)).status, 404);
    const status = (await (await fetch(`${base}/api/status`)).json()) as Record<string, unknown>;
    const snapshot = control.snapshot() as unknown as Record<string, unknown>;
    assert.deepEqual(
      (status.cameras as { id: string }[]).map((c) => c.id),
      ["cam1", "cam2"],
    );
    assert.deepEqual(status.console, { operators: true });
    assert.deepEqual(status.models, snapshot.models);
    // the metrics are still where they were
    assert.equal((await fetch(`${base}/metrics`)).status, 200);
    const missing = await fetch(`${base}/api/nothing`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /console routes: \//);
  });

  test("every result reaches a live event stream once, in order", async () => {
    const client = await EventClient.open(base);
    try {
      assert.equal(client.response.statusCode, 200);
      assert.match(String(client.response.headers["content-type"]), /^text\/event-stream/);
      const first = control.snapshot().cameras[0]!.inspected;
      for (let i = 0; i < 50; i++) control.emit(i % 2 ? "cam1" : "cam2", i === 7 ? 0.9 : 0.1);
      await waitFor("50 result events", () => client.of("result").length >= 50);
      const results = client.of("result") as {
        camera: string;
        seq: number;
        capture_ts: string;
        defective: boolean;
        score: number;
      }[];
      assert.equal(results.length, 50);
      // the JSON interfaces' one time format: ISO 8601 UTC with milliseconds, the same string in the node's
      // snapshot (`GET /api/status`, the `status` command) as in the event
      for (const r of results) assert.match(r.capture_ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      const status = (await (await fetch(`${base}/api/status`)).json()) as NodeSnapshot;
      for (const camera of ["cam1", "cam2"]) {
        const last = results.filter((r) => r.camera === camera).at(-1)!;
        const shown = status.cameras.find((c) => c.id === camera)!.last!;
        assert.equal(shown.seq, last.seq);
        assert.equal(shown.capture_ts, last.capture_ts);
        assert.equal("captureTs" in shown, false, "no camelCase key left in the snapshot");
      }
      assert.deepEqual(
        results.filter((r) => r.camera === "cam2").map((r) => r.seq),
        [...Array(25).keys()].map((k) => first + k),
      );
      assert.deepEqual(
        results.filter((r) => r.defective).map((r) => [r.camera, r.score]),
        [["cam1", 0.9]],
      );
    } finally {
      client.close();
    }
  });

  test("a stream that does not read misses events once its buffer is full, is told how many, and costs no other stream anything", async () => {
    const slow = await EventClient.open(base);
    const fast = await EventClient.open(base);
    try {
      slow.response.pause();
      (slow.response.socket as Socket).pause();
      const total = 60_000; // ~10 MB of events: more than the kernel's socket buffers and the stream's bound
      // in batches, as inference hands results over, so a reading stream keeps up between them
      for (let i = 0; i < total; i++) {
        control.emit("cam1", 0.1);
        if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      await waitFor("the fast stream's events", () => fast.of("result").length >= total, 60_000);
      assert.equal(fast.of("gap").length, 0);
      const during = Number(/^stpmd_console_events_missed_total (\d+)/m.exec(await metricsText(base))?.[1]);
      assert.ok(during > 0, "the slow stream missed events");
      (slow.response.socket as Socket).resume();
      slow.response.resume();
      // the next event the server can write to it carries the gap; until its buffer drains, events are missed
      let emitted = total;
      while (slow.of("gap").length === 0) {
        control.emit("cam1", 0.1);
        emitted += 1;
        await new Promise((resolve) => setTimeout(resolve, 20));
        assert.ok(emitted < total + 1000, "no gap event within 20 s");
      }
      await waitFor("every event or its count", () => {
        const gap = slow.of("gap") as { missed: number }[];
        return slow.of("result").length + gap[0]!.missed === emitted;
      });
      const missed = Number(/^stpmd_console_events_missed_total (\d+)/m.exec(await metricsText(base))?.[1]);
      assert.deepEqual(slow.of("gap"), [{ missed }], "the stream is told exactly what the metric counted");
      assert.equal(fast.of("result").length, emitted);
    } finally {
      slow.close();
      fast.close();
    }
  });

  test("beyond max_clients streams a new one is refused with the key to raise", async () => {
    await openStreams(base, 0);
    const open = [await EventClient.open(base), await EventClient.open(base), await EventClient.open(base)];
    try {
      const refused = await fetch(`${base}/api/events`);
      assert.equal(refused.status, 503);
      assert.equal(
        await refused.text(),
        "too many console streams (3); close another console or raise http.console.max_clients\n",
      );
    } finally {
      for (const client of open) client.close();
    }
  });

  test("images: the last frame and the last defect with the heatmap, scaled to 640 at most; clear 404s before", async () => {
    const unknown = await fetch(`${base}/api/cameras/cam9/last.jpg`);
    assert.equal(unknown.status, 404);
    assert.equal(await unknown.text(), 'unknown camera "cam9" (known: cam1, cam2)\n');
    const fresh = new TestLineControl(["camA"], 0.5);
    const { http: other, base: otherBase } = await consoleServer(fresh, {}, logger);
    try {
      const none = await fetch(`${otherBase}/api/cameras/camA/defect.jpg`);
      assert.equal(none.status, 404);
      assert.equal(await none.text(), 'camera "camA": no defect since start\n');
      other.onResult(gradientResult("camA", 1, 64, 48, [40, 20]));
      other.onResult(gradientResult("camA", 2, 64, 48));
      const last = await fetch(`${otherBase}/api/cameras/camA/last.jpg`);
      assert.equal(last.status, 200);
      assert.equal(last.headers.get("x-stpmd-seq"), "2");
      const defect = await fetch(`${otherBase}/api/cameras/camA/defect.jpg`);
      assert.equal(defect.headers.get("x-stpmd-seq"), "1");
      const { data, info } = await sharp(Buffer.from(await defect.arrayBuffer()))
        .raw()
        .toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height], [64, 48]);
      const at = (x: number, y: number) => [...data.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];
      const [r, g, b] = at(44, 24); // inside the hot square: red over grey
      assert.ok(r! > 180 && g! < 120 && b! < 120, `hot pixel ${[r, g, b]}`);
      const cold = at(10, 40); // far from it: the frame as captured (grey ramp ≈ 32)
      assert.ok(
        cold.every((v) => Math.abs(v - 32) < 12),
        `cold pixel ${cold}`,
      );
      other.onResult(gradientResult("camA", 3, 1280, 960));
      const big = await fetch(`${otherBase}/api/cameras/camA/last.jpg`);
      const meta = await sharp(Buffer.from(await big.arrayBuffer())).metadata();
      assert.deepEqual([meta.width, meta.height], [640, 480]);
    } finally {
      await other.stop();
    }
  });

  test("a command needs an operator's password: refusals are counted and logged with the user tried, never applied", async () => {
    const calls = control.calls.length;
    const anonymous = await post(base, "set_threshold", '{"camera":"cam1","threshold":0.7}');
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Basic realm="stpmd"/);
    const wrong = await post(base, "set_threshold", '{"camera":"cam1","threshold":0.7}', {
      Authorization: basic("alice", "guess"),
      "X-Stpmd-Console": "1",
    });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get("www-authenticate"), null, "the page's own form gets no browser dialog");
    const stranger = await post(base, "set_threshold", '{"camera":"cam1","threshold":0.7}', {
      Authorization: basic("mallory", "s3cret pass"),
    });
    assert.equal(stranger.status, 401);
    assert.equal(control.calls.length, calls, "nothing reached the control");
    const refusals = lines.filter((l) => l.msg === "console login refused").map((l) => l.user);
    assert.deepEqual(refusals.slice(-3), [undefined, "alice", "mallory"]);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^stpmd_console_logins_refused_total 3$/m);
  });

  test("a client address that keeps guessing is locked out; other addresses and the operator's next login are not", async () => {
    const calls = control.calls.length;
    const port = Number(new URL(base).port);
    /** A command from 127.0.0.2 (loopback is a /8), with these credentials. */
    const from2 = (password: string) =>
      new Promise<{ status: number; retryAfter: string | undefined; text: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port,
            localAddress: "127.0.0.2",
            method: "POST",
            path: "/api/command/status",
            headers: { "Content-Type": "application/json", Authorization: basic("alice", password) },
          },
          (res) => {
            let text = "";
            res.on("data", (chunk) => {
              text += chunk;
            });
            res.on("end", () =>
              resolve({ status: res.statusCode!, retryAfter: res.headers["retry-after"], text }),
            );
          },
        );
        req.on("error", reject);
        req.end("{}");
      });
    for (let i = 0; i < MAX_FAILED_LOGINS; i++) assert.equal((await from2("guess")).status, 401);
    const locked = await from2("s3cret pass");
    assert.equal(locked.status, 429, "even the right password is not checked while locked out");
    assert.equal(locked.retryAfter, String(LOGIN_LOCKOUT_MS / 1000));
    assert.equal(locked.text, "too many failed logins from 127.0.0.2; try again in 60 s\n");
    const other = await post(base, "status", "{}", { Authorization: basic("alice", "s3cret pass") });
    assert.equal(other.status, 200, "127.0.0.1 is not locked out");
    assert.equal(control.calls.length, calls);
    assert.ok(
      lines.some(
        (l) => l.msg === "console logins from this client refused for a while" && l.client === "127.0.0.2",
      ),
    );
  });

  test("an operator's command runs as over MQTT, with the same answers, and the control knows who asked", async () => {
    const auth = { Authorization: basic("alice", "s3cret pass") };
    const ok = await post(
      base,
      "set_threshold",
      '{"transaction":"hmi-1","camera":"cam1","threshold":0.7}',
      auth,
    );
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.text), {
      transaction: "hmi-1",
      status: "ok",
      data: { camera: "cam1", threshold_rule: { value: 0.7 }, old: 0.5, new: 0.7 },
    });
    assert.deepEqual(control.calls.at(-1), {
      method: "setThreshold",
      args: ["cam1", { value: 0.7 }],
      by: { via: "http", user: "alice" },
    });
    const invalid = await post(base, "enable_camera", '{"camera":"cam1","enabled":"yes"}', auth);
    assert.equal(invalid.status, 400);
    assert.deepEqual(JSON.parse(invalid.text), {
      status: "error",
      error:
        'enable_camera refused: enabled: must be a boolean (got "yes"); write true or false; send e.g. {"transaction":"e-1","camera":"cam1","enabled":false}',
    });
    const unknown = await post(base, "restart", "{}", auth);
    assert.match(
      JSON.parse(unknown.text).error,
      /^there is no command "restart"; the commands are reload, status/,
    );
    const notJson = await post(base, "collection", '{"enabled":true', auth);
    assert.match(JSON.parse(notJson.text).error, /^the request is not valid JSON \(/);
    const off = await post(base, "enable_camera", '{"camera":"cam2","enabled":false}', auth);
    assert.equal(off.status, 200);
    assert.equal(control.snapshot().cameras[1]!.enabled, false);
  });

  test("a login sets an HttpOnly SameSite=Strict session cookie; a reload finds the session; changes need its CSRF token", async () => {
    const wrong = await login(base, "alice", "guess");
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get("www-authenticate"), null, "the page's form gets no browser dialog");
    assert.equal(wrong.headers.get("set-cookie"), null);
    const ok = await login(base, "alice", "s3cret pass");
    assert.equal(ok.status, 200);
    assert.match(
      ok.headers.get("set-cookie") ?? "",
      /^stpmd_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\/; Max-Age=43200$/,
    );
    const info = JSON.parse(ok.text) as { user: string; csrf_token: string; expires_at: string };
    assert.equal(info.user, "alice");
    assert.match(info.csrf_token, /^[A-Za-z0-9_-]{43}$/);
    assert.ok(Math.abs(Date.parse(info.expires_at) - (Date.now() + 720 * 60_000)) < 10_000, info.expires_at);
    const cookie = cookieOf(ok.headers);
    // the page reloads: the cookie alone gives the session back, with the same token
    const again = await fetch(`${base}/api/session`, { headers: { Cookie: cookie } });
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as { csrf_token: string }).csrf_token, info.csrf_token);
    assert.equal((await fetch(`${base}/api/session`)).status, 401, "no cookie, no session");
    const other = await login(base, "alice", "s3cret pass");
    assert.notEqual(cookieOf(other.headers), cookie, "every login has its own random id");
    assert.notEqual(JSON.parse(other.text).csrf_token, info.csrf_token);

    const calls = control.calls.length;
    const body = '{"camera":"cam1","threshold":0.6}';
    const noToken = await post(base, "set_threshold", body, { Cookie: cookie });
    assert.deepEqual(
      [noToken.status, noToken.text],
      [403, "missing or wrong X-CSRF-Token for this session\n"],
    );
    const wrongToken = await post(base, "set_threshold", body, {
      Cookie: cookie,
      "X-CSRF-Token": JSON.parse(other.text).csrf_token,
    });
    assert.equal(wrongToken.status, 403, "another session's token does not do");
    assert.equal(control.calls.length, calls, "nothing reached the control");
    const done = await post(base, "set_threshold", body, { Cookie: cookie, "X-CSRF-Token": info.csrf_token });
    assert.equal(done.status, 200);
    assert.match(done.headers.get("set-cookie") ?? "", /Max-Age=43200$/, "each use renews the cookie");
    assert.deepEqual(control.calls.at(-1), {
      method: "setThreshold",
      args: ["cam1", { value: 0.6 }],
      by: { via: "http", user: "alice" },
    });
    // a session is no way around the cross-site check either
    const evil = await post(base, "set_threshold", body, {
      Cookie: cookie,
      "X-CSRF-Token": info.csrf_token,
      Origin: "http://evil.example",
    });
    assert.equal(evil.status, 403);

    const out = await fetch(`${base}/api/session`, { method: "DELETE", headers: { Cookie: cookie } });
    assert.equal(out.status, 204);
    assert.match(out.headers.get("set-cookie") ?? "", /^stpmd_session=; .*Max-Age=0$/);
    assert.equal((await fetch(`${base}/api/session`, { headers: { Cookie: cookie } })).status, 401);
    const after = await post(base, "set_threshold", body, {
      Cookie: cookie,
      "X-CSRF-Token": info.csrf_token,
    });
    assert.deepEqual(
      [after.status, after.text],
      [401, "your login has expired or the daemon restarted; log in again\n"],
    );
    assert.equal(control.calls.length, calls + 1);
    assert.ok(lines.some((l) => l.msg === "console operator logged in" && l.user === "alice"));
    assert.ok(lines.some((l) => l.msg === "console operator logged out" && l.user === "alice"));
  });

  test("a login is refused for a bad body or another site's page; guessing locks the address out of POST /api/session", async () => {
    const notJson = await login(base, "alice", "x", "{nope");
    assert.deepEqual(
      [notJson.status, notJson.text],
      [400, 'the login body is not JSON; send {"username": …, "password": …}\n'],
    );
    const noPassword = await login(base, "alice", "x", '{"username":"alice"}');
    assert.deepEqual(
      [noPassword.status, noPassword.text],
      [400, "the login body needs username and password as strings\n"],
    );
    const evil = await login(base, "alice", "s3cret pass", undefined, { Origin: "http://evil.example" });
    assert.deepEqual(
      [evil.status, evil.text],
      [403, "cross-site request from http://evil.example refused\n"],
    );
    const form = await login(base, "alice", "s3cret pass", undefined, { "Content-Type": "text/plain" });
    assert.equal(form.status, 403);
    const port = Number(new URL(base).port);
    /** A login from 127.0.0.3 (loopback is a /8; the command test above locks 127.0.0.2). */
    const from3 = (password: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port,
            localAddress: "127.0.0.3",
            method: "POST",
            path: "/api/session",
            headers: { "Content-Type": "application/json" },
          },
          (res) => {
            let text = "";
            res.on("data", (chunk) => {
              text += chunk;
            });
            res.on("end", () => resolve({ status: res.statusCode!, text }));
          },
        );
        req.on("error", reject);
        req.end(JSON.stringify({ username: "alice", password }));
      });
    for (let i = 0; i < MAX_FAILED_LOGINS; i++) assert.equal((await from3("guess")).status, 401);
    const locked = await from3("s3cret pass");
    assert.deepEqual(
      [locked.status, locked.text],
      [429, "too many failed logins from 127.0.0.3; try again in 60 s\n"],
    );
    assert.equal((await login(base, "alice", "s3cret pass")).status, 200, "127.0.0.1 is not locked out");
  });

  test("cross-site posts are refused even with valid credentials; oversized bodies and wrong methods too", async () => {
    const auth = { Authorization: basic("alice", "s3cret pass") };
    const calls = control.calls.length;
    const form = await post(base, "collection", '{"enabled":true}', {
      ...auth,
      "Content-Type": "text/plain",
    });
    assert.equal(form.status, 403);
    assert.equal(form.text, "a command needs Content-Type: application/json\n");
    const evil = await post(base, "collection", '{"enabled":true}', {
      ...auth,
      Origin: "http://evil.example",
    });
    assert.equal(evil.status, 403);
    assert.equal(evil.text, "cross-site request from http://evil.example refused\n");
    const big = await post(base, "collection", `{"enabled":true,"x":"${"a".repeat(70_000)}"}`, auth);
    assert.equal(big.status, 413);
    assert.equal(control.calls.length, calls);
    const same = await post(base, "collection", '{"enabled":true}', { ...auth, Origin: base });
    assert.equal(same.status, 200);
    const malformed = await post(base, "%ZZ", "{}", auth);
    assert.deepEqual([malformed.status, malformed.text], [400, "bad percent-encoding in /api/command/%ZZ\n"]);
    assert.equal((await fetch(`${base}/api/cameras/%ZZ/last.jpg`)).status, 404);
    const get = await fetch(`${base}/api/command/status`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
  });
});

test("without operators the console is read-only; a missing password file stops the start naming user and file", async () => {
  const { logger } = capturingLogger();
  const control = new TestLineControl(["cam1"]);
  const { http: readOnly, base } = await consoleServer(control, {}, logger);
  try {
    const res = await post(base, "status", "{}", { Authorization: basic("alice", "x") });
    assert.equal(res.status, 403);
    assert.equal(res.text, "the console is read-only: no http.console.users are configured\n");
    const status = (await (await fetch(`${base}/api/status`)).json()) as { console: unknown };
    assert.deepEqual(status.console, { operators: false });
  } finally {
    await readOnly.stop();
  }
  const broken = new HttpInterface({
    config: {
      enabled: true,
      bind: "127.0.0.1",
      port: await freeLoopbackPort(),
      console: {
        enabled: true,
        users: [{ username: "bob", password_file: "/nonexistent/bob" }],
        max_clients: 8,
        session_idle_min: 720,
      },
    },
    control,
    logger,
    processMetrics: false,
  });
  await assert.rejects(broken.start(), {
    message: 'http.console.users: user "bob": cannot read /nonexistent/bob: no such file (ENOENT)',
  });
  await broken.stop();
});

test("the login guard: the 5th failure within the window locks out for the window; a good login or time clears it; memory is bounded", () => {
  const guard = new LoginGuard(5, 60_000);
  for (let i = 0; i < 4; i++) assert.equal(guard.failed("a", 1000 + i), false);
  assert.equal(guard.lockedFor("a", 2000), 0);
  assert.equal(guard.failed("a", 2000), true);
  assert.equal(guard.lockedFor("a", 2000), 60_000);
  assert.equal(guard.lockedFor("a", 61_999), 1);
  assert.equal(guard.lockedFor("a", 62_000), 0, "the lockout ends");
  assert.equal(guard.failed("a", 62_001), false, "and the count starts again");
  // failures spread wider than the window never lock
  const slow = new LoginGuard(5, 60_000);
  for (let i = 0; i < 20; i++) assert.equal(slow.failed("b", i * 20_000), false);
  // a good login clears the record
  for (let i = 0; i < 4; i++) guard.failed("c", 0);
  guard.succeeded("c");
  assert.equal(guard.failed("c", 1), false);
  // guessing from many addresses keeps at most 1024 records
  const wide = new LoginGuard();
  for (let i = 0; i < 5000; i++) wide.failed(`10.0.${i >> 8}.${i & 255}`, 0);
  assert.equal(wide.size, 1024);
});

test("sessions expire after session_idle_min unused (each use renews them), and at most MAX_SESSIONS are kept", async () => {
  const dir = await tempDir("stpmd-sessions-");
  fs.writeFileSync(path.join(dir, "bob"), "pw\n");
  let now = Date.parse("2026-12-07T06:00:00Z");
  const { logger, lines } = capturingLogger();
  const operators = new Operators({
    config: {
      enabled: true,
      users: [{ username: "bob", password_file: path.join(dir, "bob") }],
      max_clients: 8,
      session_idle_min: 60,
    },
    logger,
    registry: new Registry(),
    now: () => now,
  });
  operators.start();
  // the same routes as the console: the session's own, and one change behind authorize()
  const server = http.createServer((req, res) => {
    if (req.url === "/api/session") void operators.handleSession(req, res);
    else {
      const user = operators.authorize(req, res, "test");
      if (user !== undefined) res.end(`changed by ${user}`);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const first = await login(base, "bob", "pw");
    const cookie = cookieOf(first.headers);
    const token = JSON.parse(first.text).csrf_token as string;
    const change = () => post(base, "x", "{}", { Cookie: cookie, "X-CSRF-Token": token });
    now += 59 * 60_000;
    assert.equal((await change()).text, "changed by bob");
    now += 59 * 60_000; // 118 min after the login, 59 after its last use
    const info = await fetch(`${base}/api/session`, { headers: { Cookie: cookie } });
    assert.equal(info.status, 200);
    assert.equal(
      ((await info.json()) as { expires_at: string }).expires_at,
      new Date(now + 3600_000).toISOString(),
    );
    now += 60 * 60_000 + 1;
    const late = await change();
    assert.deepEqual(
      [late.status, late.text],
      [401, "your login has expired or the daemon restarted; log in again\n"],
    );
    assert.ok(lines.some((l) => l.msg === "console session expired" && l.user === "bob"));
    assert.equal(operators.sessionCount, 0);
    // a script logging in in a loop: the oldest sessions make room, memory stays bounded
    const oldest = cookieOf((await login(base, "bob", "pw")).headers);
    for (let i = 0; i < MAX_SESSIONS; i++) await login(base, "bob", "pw");
    assert.equal(operators.sessionCount, MAX_SESSIONS);
    assert.equal((await fetch(`${base}/api/session`, { headers: { Cookie: oldest } })).status, 401);
    // Basic still works beside sessions (scripts, curl)
    const basicAuth = await post(base, "x", "{}", { Authorization: basic("bob", "pw") });
    assert.equal(basicAuth.text, "changed by bob");
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

test("the page's files are read once from the build folder: hashed assets marked cacheable, nothing when unbuilt", async () => {
  const dir = await tempDir("stpmd-console-build-");
  fs.mkdirSync(path.join(dir, "assets"));
  fs.writeFileSync(path.join(dir, "index.html"), "<!doctype html>");
  fs.writeFileSync(path.join(dir, "assets", "index-AbC123.js"), "export {};");
  fs.writeFileSync(path.join(dir, "assets", "index-AbC123.css"), "body{}");
  const assets = loadConsoleAssets(dir);
  assert.deepEqual([...assets].map(([url, a]) => [url, a.type, a.hashed, a.body.toString()]).sort(), [
    ["/assets/index-AbC123.css", "text/css; charset=utf-8", true, "body{}"],
    ["/assets/index-AbC123.js", "text/javascript; charset=utf-8", true, "export {};"],
    ["/index.html", "text/html; charset=utf-8", false, "<!doctype html>"],
  ]);
  assert.equal(loadConsoleAssets(path.join(dir, "missing")).size, 0);
});
