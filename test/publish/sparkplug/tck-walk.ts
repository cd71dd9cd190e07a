import assert from "node:assert/strict";
import type { IConnectPacket, IPublishPacket, ISubscribePacket } from "mqtt-packet";
import type { NodeSnapshot } from "../../../src/publish/control.js";
import type { MqttTap } from "../../helpers/mqtt-tap.js";
import { decodeSpec, type SpecMetric, type SpecPayload } from "./spec-payload.js";

/** A PUBLISH the node put on the wire, with its MQTT flags and its payload decoded with the spec's schema. */
export interface WireMessage {
  /** Position among all of the run's tap events (packets both ways, connections opening and closing). */
  index: number;
  conn: number;
  at: number;
  topic: string;
  verb: string;
  device: string | undefined;
  qos: number;
  retain: boolean;
  payload: SpecPayload | undefined;
  decodeError: string | undefined;
}

/** A message the test's host application received from the broker (e.g. the NDEATH will). */
export interface HostMessage {
  topic: string;
  qos: number;
  retain: boolean;
  payload: Buffer;
}

/**
 * What one scenario put on the wire, seen through an {@link MqttTap} between the node and mosquitto: the node's
 * CONNECTs, SUBSCRIBEs, PUBLISHes and DISCONNECTs, what the broker delivered to it, plus named marks (event
 * positions the scenario noted) and the control's state at some marks.
 */
export class Run {
  readonly connects: { index: number; conn: number; packet: IConnectPacket }[] = [];
  readonly subscribes: { index: number; conn: number; packet: ISubscribePacket }[] = [];
  readonly connacks: { index: number; conn: number }[] = [];
  readonly sent: WireMessage[] = [];
  /** PUBLISHes the broker delivered to the node (commands, STATE). */
  readonly delivered: { index: number; conn: number; topic: string; payload: Buffer }[] = [];
  readonly disconnects: { index: number; conn: number }[] = [];
  readonly opens: { index: number; conn: number }[] = [];
  readonly closes: { index: number; conn: number }[] = [];
  readonly marks = new Map<string, number>();
  readonly views = new Map<string, NodeSnapshot>();
  readonly received: HostMessage[] = [];
  readonly startedAt = Date.now();
  endedAt = Number.POSITIVE_INFINITY;

  constructor(
    readonly tap: MqttTap,
    readonly group: string,
    readonly node: string,
    readonly cameras: readonly string[],
  ) {}

  /** Notes the current position in the wire log under `name` (and the control's state, when given). */
  mark(name: string, view?: NodeSnapshot): void {
    this.marks.set(name, this.tap.events.length);
    if (view !== undefined) this.views.set(name, view);
  }

  at(name: string): number {
    const index = this.marks.get(name);
    assert.ok(index !== undefined, `the scenario has no mark "${name}"`);
    return index;
  }

  /** Reads the tap's log into the lists above; call once the scenario is over. */
  finish(): this {
    this.endedAt = Date.now();
    for (const [index, event] of this.tap.events.entries()) {
      if (event.kind !== "packet") {
        (event.kind === "open" ? this.opens : this.closes).push({ index, conn: event.conn });
      } else if (event.dir === "up") {
        const p = event.packet;
        if (p.cmd === "connect") this.connects.push({ index, conn: event.conn, packet: p });
        else if (p.cmd === "subscribe") this.subscribes.push({ index, conn: event.conn, packet: p });
        else if (p.cmd === "disconnect") this.disconnects.push({ index, conn: event.conn });
        else if (p.cmd === "publish") this.sent.push(this.message(index, event.conn, event.at, p));
      } else if (event.packet.cmd === "connack" && event.packet.returnCode === 0) {
        this.connacks.push({ index, conn: event.conn });
      } else if (event.packet.cmd === "publish") {
        const p = event.packet;
        this.delivered.push({ index, conn: event.conn, topic: p.topic, payload: toBuffer(p.payload) });
      }
    }
    return this;
  }

  private message(index: number, conn: number, at: number, p: IPublishPacket): WireMessage {
    const [, , verb = "", , device] = p.topic.split("/");
    let payload: SpecPayload | undefined;
    let decodeError: string | undefined;
    try {
      payload = decodeSpec(toBuffer(p.payload));
    } catch (err) {
      decodeError = String(err);
    }
    return {
      index,
      conn,
      at,
      topic: p.topic,
      verb,
      device,
      qos: p.qos,
      retain: p.retain,
      payload,
      decodeError,
    };
  }

  /** The node's messages of one verb (and device); fails when there is none, so no check passes on nothing. */
  of(verb: string, device?: string): WireMessage[] {
    const found = this.sent.filter((m) => m.verb === verb && (device === undefined || m.device === device));
    assert.ok(
      found.length > 0,
      `the scenario produced no ${verb}${device === undefined ? "" : ` for ${device}`}`,
    );
    return found;
  }

  /** The Sparkplug sessions: each NBIRTH and the node's messages after it on the same connection until the next. */
  sessions(): WireMessage[][] {
    const out: WireMessage[][] = [];
    for (const m of this.sent) {
      if (m.verb === "NBIRTH") out.push([m]);
      else if (m.verb !== "NDEATH" && out.length > 0 && out.at(-1)![0]!.conn === m.conn) out.at(-1)!.push(m);
    }
    return out;
  }

  /** The bdSeq of the will in the CONNECT that opened `conn`. */
  willBdSeq(conn: number): number {
    const connect = this.connects.find((c) => c.conn === conn);
    assert.ok(connect?.packet.will, `connection ${conn} has no will`);
    return bdSeqOf(decodeSpec(toBuffer(connect.packet.will.payload)));
  }
}

export function toBuffer(payload: Buffer | string): Buffer {
  return typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
}

export function metricOf(message: WireMessage, name: string): SpecMetric {
  const found = message.payload?.metrics?.find((m) => m.name === name);
  assert.ok(found, `${message.topic} (seq ${message.payload?.seq}) has no metric "${name}"`);
  return found;
}

export function bdSeqOf(payload: SpecPayload): number {
  const metric = payload.metrics?.find((m) => m.name === "bdSeq");
  assert.ok(metric?.longValue !== undefined, "no bdSeq metric with a long value");
  return metric.longValue;
}

/** The two scenarios the requirements are checked against. */
export interface Walk {
  /** No primary host: births, data, commands, rebirth, disable, a removed camera, a cut connection, a stop. */
  session: Run;
  /** With a primary host: waiting for its STATE, stale and foreign STATEs, offline and back. */
  primary: Run;
  primaryHostId: string;
}
