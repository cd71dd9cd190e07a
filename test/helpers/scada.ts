/**
 * A line's SCADA as the candidate tests play it, over the daemon's real interfaces on a real mosquitto: an MQTT 5
 * client that sends commands with a Response Topic and Correlation Data and keeps every result it receives (with
 * its arrival time), and a Sparkplug B host application that decodes what the node sends and sends DCMDs.
 */
import assert from "node:assert/strict";
import { connectAsync, type MqttClient } from "mqtt";
import { get as sparkplugNamespace } from "sparkplug-payload";
import type { UMetric, UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import type { CommandResponsePayload, ResultPayload } from "../../src/publish/topics.js";
import { waitFor } from "./wait.js";

const codec = sparkplugNamespace("spBv1.0")!;

/** One result as the SCADA received it. */
export interface ReceivedResult {
  at: number;
  payload: ResultPayload;
}

export class ScadaMqtt {
  readonly results = new Map<string, ReceivedResult[]>();
  readonly defects = new Map<string, { model_version: string; seq: number }[]>();
  private readonly responses = new Map<string, CommandResponsePayload>();
  private requests = 0;

  private constructor(
    readonly client: MqttClient,
    readonly clientId: string,
    private readonly responseTopic: string,
  ) {
    client.on("message", (topic, payload, packet) => {
      const at = Date.now();
      const [, camera = "", kind] = topic.split("/");
      if (topic === responseTopic) {
        const id = packet.properties?.correlationData?.toString("utf8") ?? "";
        this.responses.set(id, JSON.parse(payload.toString("utf8")) as CommandResponsePayload);
      } else if (kind === "result") {
        const list = this.results.get(camera) ?? [];
        list.push({ at, payload: JSON.parse(payload.toString("utf8")) as ResultPayload });
        this.results.set(camera, list);
      } else if (kind === "defect") {
        const list = this.defects.get(camera) ?? [];
        list.push(JSON.parse(payload.toString("utf8")) as { model_version: string; seq: number });
        this.defects.set(camera, list);
      }
    });
  }

  /**
   * Connects as MQTT 5 and subscribes to every camera's results and defects and to its own response topic (under
   * the default topic prefix `stpmd`, as {@link command} sends).
   */
  static async connect(url: string, clientId: string): Promise<ScadaMqtt> {
    const client = await connectAsync(url, { clientId, protocolVersion: 5, reconnectPeriod: 0 });
    const responseTopic = `stpmd/response/${clientId}`;
    const scada = new ScadaMqtt(client, clientId, responseTopic);
    await client.subscribeAsync(["stpmd/+/result", "stpmd/+/defect", responseTopic], { qos: 1 });
    return scada;
  }

  /**
   * Sends `<prefix>/command/<name>` with a Response Topic and Correlation Data; resolves with the answer that
   * carries that Correlation Data. Retries while the daemon has not subscribed yet (its SUBSCRIBE may come after).
   */
  async command(name: string, body: unknown, timeoutMs = 10_000): Promise<CommandResponsePayload> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const id = `${this.clientId}-${++this.requests}`;
      await this.client.publishAsync(`stpmd/command/${name}`, JSON.stringify(body), {
        qos: 1,
        properties: { responseTopic: this.responseTopic, correlationData: Buffer.from(id) },
      });
      const answer = await waitFor(`the answer to ${name} (${id})`, () => this.responses.get(id), 2000).catch(
        () => undefined,
      );
      if (answer !== undefined) return answer;
      if (Date.now() > deadline) throw new Error(`no answer to command ${name} in ${timeoutMs} ms`);
    }
  }

  /** `data` of an ok answer; fails the test (with the answer) otherwise. */
  async ok<T>(name: string, body: unknown): Promise<T> {
    const answer = await this.command(name, body);
    assert.equal(answer.status, "ok", `${name}: ${JSON.stringify(answer)}`);
    return (answer as { data: T }).data;
  }

  /** The error line of a refused command; fails the test when it was not refused. */
  async refused(name: string, body: unknown): Promise<string> {
    const answer = await this.command(name, body);
    assert.equal(answer.status, "error", `${name} should be refused: ${JSON.stringify(answer)}`);
    return (answer as { error: string }).error;
  }

  resultsOf(camera: string): ReceivedResult[] {
    return this.results.get(camera) ?? [];
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}

/**
 * What a camera's results say about its continuity: every seq from the first received to the last, none missing
 * or twice, and the longest time between two consecutive arrivals.
 */
export function continuity(results: readonly ReceivedResult[]): {
  first: number;
  last: number;
  missing: number[];
  duplicates: number;
  maxGapMs: number;
  /** The seq of the result that ended the longest gap. */
  maxGapSeq: number;
} {
  const seqs = results.map((r) => r.payload.seq);
  const seen = new Set(seqs);
  const first = Math.min(...seqs);
  const last = Math.max(...seqs);
  const missing: number[] = [];
  for (let s = first; s <= last; s++) if (!seen.has(s)) missing.push(s);
  let maxGapMs = 0;
  let maxGapSeq = first;
  for (let i = 1; i < results.length; i++) {
    const gap = results[i]!.at - results[i - 1]!.at;
    if (gap > maxGapMs) {
      maxGapMs = gap;
      maxGapSeq = results[i]!.payload.seq;
    }
  }
  return { first, last, missing, duplicates: seqs.length - seen.size, maxGapMs, maxGapSeq };
}

/** A Sparkplug B host application: decodes every message of its group, sends DCMDs. */
export class SparkplugHost {
  readonly received: { verb: string; device: string | undefined; payload: UPayload }[] = [];

  private constructor(
    readonly client: MqttClient,
    readonly group: string,
    readonly node: string,
  ) {
    client.on("message", (topic, payload) => {
      const [, , verb = "", , device] = topic.split("/");
      if (verb === "DCMD" || verb === "NCMD") return;
      this.received.push({ verb, device, payload: codec.decodePayload(payload) });
    });
  }

  static async start(url: string, group: string, node: string): Promise<SparkplugHost> {
    const client = await connectAsync(url, { clientId: `host-${group}`, reconnectPeriod: 0 });
    await client.subscribeAsync(`spBv1.0/${group}/#`, { qos: 1 });
    return new SparkplugHost(client, group, node);
  }

  /** Every value a device metric had in its DBIRTH and DDATA messages, in order. */
  values(device: string, name: string): unknown[] {
    const out: unknown[] = [];
    for (const m of this.received) {
      if (m.device !== device || (m.verb !== "DBIRTH" && m.verb !== "DDATA")) continue;
      const metric = m.payload.metrics?.find((x) => x.name === name);
      if (metric !== undefined) out.push(metric.value);
    }
    return out;
  }

  /** The latest value of a device metric. */
  latest(device: string, name: string): unknown {
    return this.values(device, name).at(-1);
  }

  async dcmd(device: string, metrics: UMetric[]): Promise<void> {
    await this.client.publishAsync(
      `spBv1.0/${this.group}/DCMD/${this.node}/${device}`,
      Buffer.from(codec.encodePayload({ timestamp: Date.now(), metrics })),
      { qos: 0 },
    );
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}

/** A console operator logged in over the real HTTP API: its session cookie and CSRF token on every change. */
export class ConsoleOperator {
  private constructor(
    readonly base: string,
    private readonly cookie: string,
    private readonly csrf: string,
  ) {}

  static async login(base: string, username: string, password: string): Promise<ConsoleOperator> {
    const res = await fetch(`${base}/api/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    assert.equal(res.status, 200, `login: ${res.status} ${await res.clone().text()}`);
    const cookie = (res.headers.get("set-cookie") ?? "").split(";")[0]!;
    const { csrf_token } = (await res.json()) as { csrf_token: string };
    return new ConsoleOperator(base, cookie, csrf_token);
  }

  async post(route: string, body: unknown): Promise<Response> {
    return fetch(`${this.base}${route}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Cookie: this.cookie, "X-CSRF-Token": this.csrf },
      body: JSON.stringify(body),
    });
  }
}

export async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  assert.equal(res.status, 200, `${url}: ${res.status} ${await res.clone().text()}`);
  return (await res.json()) as T;
}
