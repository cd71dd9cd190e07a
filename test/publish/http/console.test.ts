import assert from "node:assert/strict";
import fs from "node:fs";
import http, { type IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import type { ConsoleConfig } from "../../../src/config/index.js";
import type { Logger } from "../../../src/core/log.js";
import type { InspectionResult } from "../../../src/core/result.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { LOGIN_LOCKOUT_MS, LoginGuard, MAX_FAILED_LOGINS } from "../../../src/publish/http/operators.js";
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
      console: { enabled: true, users: [], max_clients: 8, ...console },
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

  test("serves its page, script and style with a strict content policy, and the node's snapshot", async () => {
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    const html = await page.text();
    assert.match(html, /<script src="\/console.js" defer><\/script>/);
    for (const asset of ["/console.js", "/console.css"]) {
      const res = await fetch(`${base}${asset}`);
      assert.equal(res.status, 200, asset);
      assert.ok((await res.text()).length > 1000, asset);
    }
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
        defective: boolean;
        score: number;
      }[];
      assert.equal(results.length, 50);
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
      error: 'invalid enable_camera request: enabled: must be a boolean (got "yes"); write true or false',
    });
    const unknown = await post(base, "restart", "{}", auth);
    assert.match(JSON.parse(unknown.text).error, /^unknown command "restart" \(known: reload, status/);
    const notJson = await post(base, "collection", '{"enabled":true', auth);
    assert.match(JSON.parse(notJson.text).error, /^payload is not JSON/);
    const off = await post(base, "enable_camera", '{"camera":"cam2","enabled":false}', auth);
    assert.equal(off.status, 200);
    assert.equal(control.snapshot().cameras[1]!.enabled, false);
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
