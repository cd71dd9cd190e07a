/**
 * The Sparkplug 3.0 edge-node requirements, one entry per `tck-id-…` that the specification's compatibility kit
 * (eclipse-sparkplug/sparkplug, tck/…/test/edge/*.java, commit e45b610) checks an edge node against, each with
 * what it requires (in our words) and how the walk in tck.test.ts checks it against the real node and mosquitto.
 * An entry with `na` does not apply to this node (the reason says why); its check then verifies the premise
 * (e.g. that no message carries a template), so the reason cannot go stale silently.
 *
 * docs/line-integration/sparkplug.md carries the table generated from this list
 * (`node dist/test/publish/sparkplug/write-tck-table.js`); tck.test.ts fails when it is stale.
 */
import assert from "node:assert/strict";
import { decodeSpec, metricValue, type SpecMetric, typeName, valueFields } from "./spec-payload.js";
import { bdSeqOf, metricOf, type Run, toBuffer, type Walk, type WireMessage } from "./tck-walk.js";

export interface Requirement {
  id: string;
  /** What the requirement asks of an edge node, in our words. */
  requires: string;
  /** How the walk checks it (or, with `na`, what it verifies of the premise). */
  how: string;
  /** Why the requirement does not apply to this node; absent when it applies. */
  na?: string;
  /** Where the node deliberately departs from a SHOULD, and why. */
  deviation?: string;
  check: (walk: Walk) => void;
}

const NS = "spBv1.0";
const BIRTHS = ["NBIRTH", "DBIRTH"];
const BIRTH_AND_DATA = ["NBIRTH", "DBIRTH", "NDATA", "DDATA"];
const DEVICE_VERBS = new Set(["DBIRTH", "DDATA", "DDEATH"]);
const ACKS = new Set(["puback", "pubrec", "pubrel", "pubcomp", "pingreq"]);

function topicOf(run: Run, verb: string, device?: string): string {
  return `${NS}/${run.group}/${verb}/${run.node}${device === undefined ? "" : `/${device}`}`;
}

/** Every message of `verb` in both scenarios (at least one overall). */
function all(walk: Walk, verb: string): WireMessage[] {
  const found = [walk.session, walk.primary].flatMap((run) => run.sent.filter((m) => m.verb === verb));
  assert.ok(found.length > 0, `no ${verb} in either scenario`);
  return found;
}

function metricsOf(walk: Walk, verbs: string[]): { message: WireMessage; metric: SpecMetric }[] {
  const out = verbs.flatMap((verb) =>
    all(walk, verb).flatMap((message) =>
      (message.payload?.metrics ?? []).map((metric) => ({ message, metric })),
    ),
  );
  assert.ok(out.length > 0, `no metrics in ${verbs.join(", ")}`);
  return out;
}

const where = (m: WireMessage): string => `${m.topic} seq ${m.payload?.seq}`;

// ---- checks shared by several requirements ----

const topicForm =
  (verb: string) =>
  (walk: Walk): void => {
    for (const run of [walk.session, walk.primary]) {
      for (const m of run.sent.filter((x) => x.verb === verb)) {
        if (DEVICE_VERBS.has(verb)) {
          assert.ok(
            m.device !== undefined && run.cameras.includes(m.device),
            `${m.topic}: a configured camera`,
          );
          assert.equal(m.topic, topicOf(run, verb, m.device));
        } else assert.equal(m.topic, topicOf(run, verb));
      }
    }
    all(walk, verb);
  };

const qos0NotRetained =
  (verb: string) =>
  (walk: Walk): void => {
    for (const m of all(walk, verb)) {
      assert.equal(m.qos, 0, `${where(m)}: QoS`);
      assert.equal(m.retain, false, `${where(m)}: retain`);
    }
  };

const decodes =
  (verb: string) =>
  (walk: Walk): void => {
    for (const m of all(walk, verb)) assert.equal(m.decodeError, undefined, `${m.topic}: ${m.decodeError}`);
  };

/** A payload timestamp: epoch milliseconds (UTC) inside the scenario, i.e. the time the message was sent. */
const payloadTimestamp =
  (verb: string) =>
  (walk: Walk): void => {
    for (const run of [walk.session, walk.primary]) {
      for (const m of run.sent.filter((x) => x.verb === verb)) {
        const ts = m.payload?.timestamp;
        assert.ok(ts !== undefined, `${where(m)}: no payload timestamp`);
        assert.ok(
          ts >= run.startedAt - 1 && ts <= m.at + 1,
          `${where(m)}: timestamp ${ts} not its send time`,
        );
      }
    }
    all(walk, verb);
  };

const seqIncluded =
  (verb: string) =>
  (walk: Walk): void => {
    for (const m of all(walk, verb)) {
      const seq = m.payload?.seq;
      assert.ok(seq !== undefined && seq >= 0 && seq <= 255, `${where(m)}: seq ${seq}`);
    }
  };

/** Each message of `verb` has the previous message's seq + 1 in its session (255 wraps to 0), and some wrapped. */
const seqFollows =
  (verb: string) =>
  (walk: Walk): void => {
    let checked = 0;
    for (const session of [walk.session, walk.primary].flatMap((run) => run.sessions())) {
      for (let i = 1; i < session.length; i++) {
        const m = session[i]!;
        if (m.verb !== verb) continue;
        assert.equal(
          m.payload?.seq,
          ((session[i - 1]!.payload?.seq ?? -2) + 1) % 256,
          `${where(m)} after seq`,
        );
        checked += 1;
      }
    }
    assert.ok(checked > 0, `no ${verb} after an NBIRTH`);
    const seqs = walk.session.sent.filter((m) => m.verb !== "NDEATH").map((m) => m.payload?.seq);
    assert.ok(
      seqs.some((seq, i) => seq === 0 && seqs[i - 1] === 255),
      "the session scenario sends more than 256 messages, so seq wraps from 255 to 0 at least once",
    );
  };

const noDeathSeq = (walk: Walk): void => {
  for (const m of all(walk, "NDEATH")) assert.equal(m.payload?.seq, undefined, `${m.topic}: seq`);
  for (const run of [walk.session, walk.primary]) {
    for (const c of run.connects) {
      const will = c.packet.will;
      assert.ok(will);
      assert.equal(decodeSpec(toBuffer(will.payload)).seq, undefined, "the will's NDEATH has no seq");
    }
  }
};

/** Every CONNECT carries the NDEATH will with `check` true of it. */
const everyWill =
  (
    what: string,
    check: (will: NonNullable<Run["connects"][number]["packet"]["will"]>, run: Run) => boolean,
  ) =>
  (walk: Walk): void => {
    for (const run of [walk.session, walk.primary]) {
      assert.ok(run.connects.length >= 2, "each scenario connects at least twice");
      for (const c of run.connects) {
        assert.ok(c.packet.will, `CONNECT ${c.conn} has a will`);
        assert.ok(check(c.packet.will, run), `CONNECT ${c.conn}: ${what}`);
      }
    }
  };

/** Every NBIRTH's bdSeq is the one in the will of the CONNECT that opened its connection. */
const birthBdSeqIsWills = (walk: Walk): void => {
  for (const run of [walk.session, walk.primary]) {
    for (const m of run.of("NBIRTH")) assert.equal(bdSeqOf(m.payload!), run.willBdSeq(m.conn), where(m));
  }
};

const hasBdSeq = (walk: Walk): void => {
  for (const m of all(walk, "NBIRTH")) {
    const metric = metricOf(m, "bdSeq");
    assert.equal(typeName(metric.datatype), "Int64", "bdSeq is Int64 as the payload chapter gives it");
    assert.ok(metric.longValue !== undefined && metric.longValue >= 0 && metric.longValue <= 255);
  }
};

const rebirthMetric = (walk: Walk): void => {
  for (const m of all(walk, "NBIRTH")) {
    const metric = metricOf(m, "Node Control/Rebirth");
    assert.equal(typeName(metric.datatype), "Boolean");
    assert.equal(metric.booleanValue, false);
    assert.equal(metric.alias, undefined);
  }
};

/** Name, datatype and exactly one value field — or is_null and none. */
const completeMetrics =
  (verbs: string[]) =>
  (walk: Walk): void => {
    for (const { message, metric } of metricsOf(walk, verbs)) {
      const at = `${where(message)} ${metric.name}`;
      assert.ok(metric.name !== undefined && metric.name !== "", `${at}: name`);
      assert.ok(metric.datatype !== undefined, `${at}: datatype`);
      const fields = valueFields(metric);
      if (metric.isNull === true) assert.deepEqual(fields, [], `${at}: is_null and a value`);
      else assert.equal(fields.length, 1, `${at}: one value, got ${fields.join(", ") || "none"}`);
    }
  };

/** Datatype codes the schema's DataType enum has (not Unknown), each carried in the value field its type uses. */
const FIELD_OF: Record<string, string> = {
  Int8: "intValue",
  Int16: "intValue",
  Int32: "intValue",
  UInt8: "intValue",
  UInt16: "intValue",
  UInt32: "intValue",
  Int64: "longValue",
  UInt64: "longValue",
  DateTime: "longValue",
  Float: "floatValue",
  Double: "doubleValue",
  Boolean: "booleanValue",
  String: "stringValue",
  Text: "stringValue",
  UUID: "stringValue",
};
const validDatatypes = (walk: Walk): void => {
  for (const { message, metric } of metricsOf(walk, BIRTH_AND_DATA)) {
    const name = typeName(metric.datatype);
    assert.ok(
      name !== undefined && name !== "Unknown",
      `${where(message)} ${metric.name}: datatype ${metric.datatype}`,
    );
    assert.ok(Number.isInteger(metric.datatype) && metric.datatype! >= 0 && metric.datatype! < 2 ** 32);
    if (metric.isNull !== true)
      assert.deepEqual(valueFields(metric), [FIELD_OF[name]], `${metric.name} (${name})`);
  }
};

const namedNoAliases = (walk: Walk): void => {
  for (const { message, metric } of metricsOf(walk, [...BIRTH_AND_DATA, "NDEATH"])) {
    assert.ok(metric.name !== undefined && metric.name !== "", `${where(message)}: unnamed metric`);
    assert.equal(metric.alias, undefined, `${where(message)} ${metric.name}: alias`);
  }
};

/** Premise of the not-applicable payload features: no message carries `field` in any metric. */
const noneCarry =
  (field: keyof SpecMetric) =>
  (walk: Walk): void => {
    for (const { message, metric } of metricsOf(walk, [...BIRTH_AND_DATA, "NDEATH", "DDEATH"])) {
      assert.equal(metric[field], undefined, `${where(message)} ${metric.name}: ${field}`);
    }
  };
const noTemplates = noneCarry("templateValue");
const noDataSets = noneCarry("datasetValue");
const noPropertySets = noneCarry("properties");

/** Every message of the scenario the node sent on `conn`, in order. */
function onConn(run: Run, conn: number): WireMessage[] {
  return run.sent.filter((m) => m.conn === conn);
}

/** Per connection with births: NBIRTH is the first PUBLISH, then one DBIRTH per camera, then anything else. */
const birthSequence = (walk: Walk): void => {
  for (const run of [walk.session, walk.primary]) {
    const conns = [...new Set(run.of("NBIRTH").map((m) => m.conn))];
    for (const conn of conns) {
      const sent = onConn(run, conn);
      assert.equal(sent[0]?.verb, "NBIRTH", `connection ${conn}: first PUBLISH`);
      for (const session of run.sessions().filter((s) => s[0]!.conn === conn)) {
        const devices = session.slice(1, 1 + run.cameras.length);
        assert.deepEqual(
          devices.map((m) => `${m.verb} ${m.device}`).sort(),
          run.cameras.map((c) => `DBIRTH ${c}`).sort(),
          `connection ${conn}: a DBIRTH per camera right after NBIRTH seq ${session[0]!.payload?.seq}`,
        );
      }
    }
  }
};

const dataAfterBirths =
  (verb: string) =>
  (walk: Walk): void => {
    birthSequence(walk);
    for (const run of [walk.session, walk.primary]) {
      for (const m of run.sent.filter((x) => x.verb === verb)) {
        const session = run.sessions().find((s) => s.includes(m));
        assert.ok(session, `${where(m)} outside a session: before any NBIRTH on its connection`);
        if (verb !== "DBIRTH")
          assert.ok(session.indexOf(m) > run.cameras.length, `${where(m)} inside the birth sequence`);
      }
    }
    all(walk, verb);
  };

/** The host's picture (births, then data, merged) equals the control's state at the mark `settled`. */
const reportByException =
  (level: "node" | "device") =>
  (walk: Walk): void => {
    const run = walk.session;
    const end = run.at("settled");
    const view = run.views.get("settled");
    assert.ok(view);
    const picture = new Map<string, Map<string, unknown>>();
    for (const m of run.sent.filter((x) => x.index < end)) {
      const key = m.device ?? "";
      if (m.verb === "NBIRTH" || m.verb === "DBIRTH") picture.set(key, new Map());
      for (const metric of m.payload?.metrics ?? []) {
        // by exception: an NDATA metric is one whose value changed (Uptime rides along with any change)
        if (m.verb === "NDATA" && metric.name !== "Uptime") {
          assert.notEqual(
            picture.get(key)?.get(metric.name!),
            metricValue(metric),
            `${where(m)}: unchanged ${metric.name}`,
          );
        }
        picture.get(key)?.set(metric.name!, metricValue(metric));
      }
    }
    if (level === "node") {
      assert.equal(picture.get("")?.get("Inspected"), view.inspected);
      assert.equal(picture.get("")?.get("Connection/MQTT"), true, "the MQTT output came up after the births");
      return;
    }
    for (const camera of view.cameras) {
      const tags = picture.get(camera.id);
      assert.ok(tags, camera.id);
      assert.equal(tags.get("Inspected"), camera.inspected, `${camera.id} Inspected`);
      assert.equal(tags.get("Defects"), camera.defects, `${camera.id} Defects`);
      assert.equal(tags.get("Threshold"), camera.threshold, `${camera.id} Threshold`);
      assert.equal(tags.get("Enabled"), camera.enabled, `${camera.id} Enabled`);
      assert.equal(tags.get("State"), camera.state, `${camera.id} State`);
    }
  };

/** The births after the Rebirth command report the values in force (cam1's threshold set by DCMD, cam3 disabled). */
const birthValuesCurrent =
  (verb: "NBIRTH" | "DBIRTH") =>
  (walk: Walk): void => {
    completeMetrics([verb])(walk);
    const run = walk.session;
    const after = run.sent.filter((m) => m.index >= run.at("rebirth") && m.verb === verb);
    assert.ok(after.length > 0, `no ${verb} after the Rebirth command`);
    if (verb === "NBIRTH") {
      assert.equal(metricValue(metricOf(after[0]!, "Connection/MQTT")), true);
      assert.equal(
        metricValue(metricOf(after[0]!, "Connection/Primary Host Online")),
        null,
        "is_null: no primary host",
      );
      return;
    }
    assert.equal(metricValue(metricOf(after.find((m) => m.device === "cam1")!, "Threshold")), 0.8);
    assert.equal(metricValue(metricOf(after.find((m) => m.device === "cam3")!, "Enabled")), false);
    assert.equal(metricValue(metricOf(after.find((m) => m.device === "cam1")!, "Last/Defective")), true);
  };

/** The node subscribed to `topic` at QoS 1 on every connection, before its first PUBLISH there. */
const subscribedBeforeBirth =
  (topic: (run: Run) => string) =>
  (walk: Walk): void => {
    for (const run of [walk.session, walk.primary]) {
      for (const conn of new Set(run.sent.map((m) => m.conn))) {
        const first = onConn(run, conn)[0]!;
        const sub = run.subscribes.find(
          (s) =>
            s.conn === conn &&
            s.index < first.index &&
            s.packet.subscriptions.some((x) => x.topic === topic(run)),
        );
        assert.ok(sub, `connection ${conn}: no SUBSCRIBE to ${topic(run)} before ${first.topic}`);
        assert.equal(sub.packet.subscriptions.find((x) => x.topic === topic(run))!.qos, 1);
      }
    }
  };

/** After the Rebirth NCMD reached the node, its next PUBLISH is an NBIRTH (no DATA in between). */
const rebirthStopsData = (walk: Walk): void => {
  const run = walk.session;
  const command = run.delivered.find((d) => d.topic === topicOf(run, "NCMD") && d.index >= run.at("rebirth"));
  assert.ok(command, "the Rebirth NCMD reached the node");
  const next = run.sent.find((m) => m.index > command.index);
  assert.equal(next?.verb, "NBIRTH");
};

const rebirthSequence = (walk: Walk): void => {
  rebirthStopsData(walk);
  const run = walk.session;
  const births = run.sent.filter((m) => m.index >= run.at("rebirth") && m.verb === "NBIRTH");
  const session = run.sessions().find((s) => s[0] === births[0]);
  assert.ok(session);
  assert.deepEqual(
    session.slice(1, 1 + run.cameras.length).map((m) => `${m.verb} ${m.device}`),
    run.cameras.map((c) => `DBIRTH ${c}`),
  );
};

const rebirthSameBdSeq = (walk: Walk): void => {
  const run = walk.session;
  const births = run.of("NBIRTH");
  const rebirth = births.find((m) => m.index >= run.at("rebirth"))!;
  const before = births.filter((m) => m.index < rebirth.index).at(-1)!;
  assert.equal(rebirth.conn, before.conn, "the rebirth stays in the same MQTT session");
  assert.equal(bdSeqOf(rebirth.payload!), run.willBdSeq(rebirth.conn));
  assert.equal(bdSeqOf(rebirth.payload!), bdSeqOf(before.payload!));
};

/** DDEATH only for the camera the reload removed; none for the one disabled by DCMD. */
const ddeathOnLoss = (walk: Walk): void => {
  const run = walk.session;
  const deaths = run.of("DDEATH");
  assert.deepEqual(
    deaths.map((m) => m.device),
    ["cam4"],
  );
  assert.ok(deaths[0]!.index >= run.at("removed"), "after the camera was removed");
  assert.ok(
    !run.sent.some((m) => m.verb === "DDEATH" && m.device === "cam3"),
    "disabling cam3 kept it born: its values are current and it takes DCMD (see docs)",
  );
};

/** An NDEATH PUBLISH (QoS 1, bdSeq of the will) then, as the next packet on that connection, a DISCONNECT. */
const intentionalDisconnect =
  (run: (walk: Walk) => Run, after: string) =>
  (walk: Walk): void => {
    const r = run(walk);
    const death = r.sent.find((m) => m.verb === "NDEATH" && m.index >= r.at(after));
    assert.ok(death, `an NDEATH after "${after}"`);
    assert.equal(death.qos, 1);
    assert.equal(bdSeqOf(death.payload!), r.willBdSeq(death.conn));
    // acknowledgements (the PUBACK of the STATE that ended the session) are not messages of the node
    const next = r.tap.events
      .slice(death.index + 1)
      .find((e) => e.conn === death.conn && e.kind === "packet" && e.dir === "up" && !ACKS.has(e.packet.cmd));
    assert.equal(
      next?.kind === "packet" ? next.packet.cmd : undefined,
      "disconnect",
      "DISCONNECT right after NDEATH",
    );
  };

const ndeathPayload = (walk: Walk): void => {
  for (const m of all(walk, "NDEATH")) {
    assert.deepEqual(
      m.payload?.metrics?.map((x) => x.name),
      ["bdSeq"],
    );
    assert.equal(
      bdSeqOf(m.payload!),
      walk.session.sent.includes(m) ? walk.session.willBdSeq(m.conn) : walk.primary.willBdSeq(m.conn),
    );
  }
};

/** The broker published the will when the tap cut the connection: the host got it, QoS 1, not retained. */
const willDelivered = (walk: Walk): void => {
  const run = walk.session;
  const wills = run.received.filter((m) => m.topic === topicOf(run, "NDEATH"));
  assert.ok(wills.length >= 2, "the will after the cut and the NDEATH of the stop");
  for (const will of wills) {
    assert.equal(will.qos, 1);
    assert.equal(will.retain, false);
    assert.ok(bdSeqOf(decodeSpec(will.payload)) >= 0);
  }
};

// ---- primary host ----

function stateDeliveries(walk: Walk): { index: number; online: boolean; timestamp: number }[] {
  const run = walk.primary;
  return run.delivered
    .filter((d) => d.topic === `${NS}/STATE/${walk.primaryHostId}`)
    .map((d) => ({
      index: d.index,
      ...(JSON.parse(d.payload.toString("utf8")) as { online: boolean; timestamp: number }),
    }));
}

/** No NBIRTH before the first valid online STATE reached the node, and no births before that on any connection. */
const waitsForHost = (walk: Walk): void => {
  const run = walk.primary;
  const firstOnline = stateDeliveries(walk).find((s) => s.online && s.index >= run.at("fresh-online"));
  assert.ok(firstOnline, "the online STATE reached the node");
  const firstBirth = run.of("NBIRTH")[0]!;
  assert.ok(firstBirth.index > firstOnline.index, "NBIRTH only after the online STATE");
  assert.equal(run.sent.filter((m) => m.index < firstOnline.index).length, 0, "nothing published before it");
};

const ignoresOtherHosts = (walk: Walk): void => {
  waitsForHost(walk);
  const run = walk.primary;
  assert.ok(
    !run.delivered.some(
      (d) => d.topic.startsWith(`${NS}/STATE/`) && d.topic !== `${NS}/STATE/${walk.primaryHostId}`,
    ),
  );
  assert.ok(
    !run.sent.some((m) => m.index >= run.at("other-online") && m.index < run.at("fresh-online")),
    "births for another host's STATE",
  );
};

const needsOnlineTrue = (walk: Walk): void => {
  const run = walk.primary;
  const offline = stateDeliveries(walk).find((s) => !s.online && s.index < run.at("fresh-online"));
  assert.ok(offline, "an offline STATE reached the waiting node");
  assert.ok(!run.sent.some((m) => m.index < run.at("fresh-online")), "no births on an offline STATE");
};

const needsNewerTimestamp = (walk: Walk): void => {
  const run = walk.primary;
  const stale = stateDeliveries(walk).find((s) => s.online && s.index < run.at("fresh-online"));
  assert.ok(stale, "a stale online STATE (older than the offline one) reached the waiting node");
  assert.ok(!run.sent.some((m) => m.index < run.at("fresh-online")), "no births on a stale online STATE");
};

const offlineEndsSession = (walk: Walk): void => {
  intentionalDisconnect((w) => w.primary, "offline")(walk);
  const run = walk.primary;
  const death = run.sent.find((m) => m.verb === "NDEATH" && m.index >= run.at("offline"))!;
  const reconnect = run.connects.find((c) => c.index > death.index);
  assert.ok(reconnect, "a new CONNECT after the offline STATE");
  assert.ok(reconnect.conn !== death.conn);
  const rebirth = run.sent.find((m) => m.verb === "NBIRTH" && m.index > death.index)!;
  assert.ok(rebirth.index >= run.at("back-online"), "no births until the host is online again");
};

const staleOfflineIgnored = (walk: Walk): void => {
  const run = walk.primary;
  const stale = stateDeliveries(walk).find((s) => !s.online && s.index >= run.at("stale-offline"));
  assert.ok(stale && stale.index < run.at("offline"), "the stale offline STATE reached the node");
  const between = (i: number): boolean => i >= run.at("stale-offline") && i < run.at("offline");
  assert.ok(
    !run.sent.some((m) => m.verb === "NDEATH" && between(m.index)),
    "no NDEATH for a stale offline STATE",
  );
  assert.ok(!run.disconnects.some((d) => between(d.index)), "no DISCONNECT for it");
  assert.ok(!run.closes.some((c) => between(c.index)), "the connection stays up");
};

/** The node's connections never overlap: one server, one connection at a time. */
const oneConnectionAtATime = (walk: Walk): void => {
  for (const run of [walk.session, walk.primary]) {
    assert.ok(run.opens.length >= 2);
    for (const open of run.opens.slice(1)) {
      const before = run.opens.filter((o) => o.index < open.index).map((o) => o.conn);
      for (const conn of before) {
        assert.ok(
          run.closes.some((c) => c.conn === conn && c.index < open.index),
          `connection ${conn} still open`,
        );
      }
    }
  }
};

const everyConnect =
  (what: string, check: (packet: Run["connects"][number]["packet"]) => boolean) =>
  (walk: Walk): void => {
    for (const run of [walk.session, walk.primary]) {
      assert.ok(run.connects.length >= 2);
      for (const c of run.connects) assert.ok(check(c.packet), `CONNECT ${c.conn}: ${what}`);
    }
  };
const mqtt311 = everyConnect("MQTT 3.1.1", (p) => p.protocolVersion === 4);

const NA_TEMPLATES = "the node sends no templates (every metric is a scalar)";
const NA_DATASETS = "the node sends no DataSet metrics";
const NA_PROPERTIES = "the node sends no property sets (no metric properties, no quality codes)";
const NA_ALIASES = "the node sends metrics by name and never uses aliases";
const NA_MQTT5 = "the node connects with MQTT 3.1.1, never 5.0";
const NA_SERVERS = "the node has one MQTT server (`sparkplug.url`), no list to walk";
export const REQUIREMENTS: Requirement[] = [
  // ---- the session: connect, will, subscriptions ----
  {
    id: "tck-id-principles-persistence-clean-session-311",
    requires: "With MQTT 3.1.1 the CONNECT sets Clean Session.",
    how: "every CONNECT on the wire (first, after a cut, after an offline host) has the clean flag and protocol level 4",
    check: everyConnect("clean session, 3.1.1", (p) => p.clean === true && p.protocolVersion === 4),
  },
  {
    id: "tck-id-principles-persistence-clean-session-50",
    requires: "With MQTT 5.0 the CONNECT sets Clean Start and a Session Expiry Interval of 0.",
    how: "checks that every CONNECT is MQTT 3.1.1",
    na: NA_MQTT5,
    check: mqtt311,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-connect",
    requires: "The node has an MQTT session before it publishes NBIRTH or DBIRTH.",
    how: "every birth is on a connection whose CONNECT the broker accepted (CONNACK 0) before it",
    check: (walk) => {
      for (const run of [walk.session, walk.primary]) {
        for (const m of run.sent.filter((x) => BIRTHS.includes(x.verb))) {
          assert.ok(
            run.connacks.some((c) => c.conn === m.conn && c.index < m.index),
            `${where(m)} before CONNACK`,
          );
        }
      }
    },
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-will-message",
    requires: "Every CONNECT carries a will.",
    how: "every CONNECT has a will",
    check: everyWill("a will", () => true),
  },
  {
    id: "tck-id-payloads-ndeath-will-message",
    requires: "The NDEATH is the will of the CONNECT.",
    how: "every CONNECT's will is on the NDEATH topic; after the tap cuts the connection the host receives it",
    check: (walk) => {
      everyWill("NDEATH will", (will, run) => will.topic === topicOf(run, "NDEATH"))(walk);
      willDelivered(walk);
    },
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-will-message-topic",
    requires: "The will's topic is spBv1.0/group/NDEATH/node.",
    how: "every CONNECT's will topic",
    check: everyWill("NDEATH topic", (will, run) => will.topic === topicOf(run, "NDEATH")),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-will-message-payload",
    requires: "The will's payload is a Sparkplug B protobuf.",
    how: "every will payload decodes with the spec's schema and holds a bdSeq",
    check: everyWill("Sparkplug payload", (will) => bdSeqOf(decodeSpec(toBuffer(will.payload))) >= 0),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-will-message-qos",
    requires: "The will has QoS 1.",
    how: "every CONNECT's will QoS; the delivered will arrives at QoS 1",
    check: (walk) => {
      everyWill("will QoS 1", (will) => will.qos === 1)(walk);
      willDelivered(walk);
    },
  },
  {
    id: "tck-id-payloads-ndeath-will-message-qos",
    requires: "The CONNECT sets the will QoS to 1.",
    how: "every CONNECT's will QoS",
    check: everyWill("will QoS 1", (will) => will.qos === 1),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-will-message-will-retained",
    requires: "The will is not retained.",
    how: "every CONNECT's will retain flag; the delivered will (seen with retain-as-published) is not retained",
    check: (walk) => {
      everyWill("will not retained", (will) => will.retain === false)(walk);
      willDelivered(walk);
    },
  },
  {
    id: "tck-id-payloads-ndeath-will-message-retain",
    requires: "The CONNECT sets the will's retain flag to false.",
    how: "every CONNECT's will retain flag",
    check: everyWill("will not retained", (will) => will.retain === false),
  },
  {
    id: "tck-id-message-flow-edge-node-ncmd-subscribe",
    requires: "The node subscribes to spBv1.0/group/NCMD/node at QoS 1.",
    how: "a SUBSCRIBE for that topic at QoS 1 on every connection, before the connection's first PUBLISH",
    check: subscribedBeforeBirth((run) => topicOf(run, "NCMD")),
  },
  {
    id: "tck-id-message-flow-device-dcmd-subscribe",
    requires: "For a device that takes writes, the node subscribes to its DCMD topic at QoS 1.",
    how: "a SUBSCRIBE for spBv1.0/group/DCMD/node/+ (every camera's DCMD) at QoS 1 on every connection, before the first PUBLISH; a DCMD to a camera is applied",
    check: (walk) => {
      subscribedBeforeBirth((run) => topicOf(run, "DCMD", "+"))(walk);
      reportByException("device")(walk); // cam1's threshold and cam3's Enabled came by DCMD
    },
  },
  {
    id: "tck-id-operational-behavior-primary-application-state-with-multiple-servers-state-subs",
    requires: "A node configured with a primary host subscribes to that host's STATE topic.",
    how: "with `primary_host_id`, a SUBSCRIBE for spBv1.0/STATE/<host> at QoS 1 on every connection before any PUBLISH",
    check: (walk) =>
      subscribedBeforeBirth(() => `${NS}/STATE/${walk.primaryHostId}`)({ ...walk, session: walk.primary }),
  },
  // ---- NBIRTH ----
  {
    id: "tck-id-principles-birth-certificates-order",
    requires: "Births are the first messages the node publishes.",
    how: "on every connection with births the first PUBLISH is NBIRTH, followed by a DBIRTH per camera",
    check: birthSequence,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-topic",
    requires: "NBIRTH goes to spBv1.0/group/NBIRTH/node.",
    how: "every NBIRTH's topic",
    check: topicForm("NBIRTH"),
  },
  {
    id: "tck-id-topics-nbirth-topic",
    requires: "NBIRTH's topic is namespace/group/NBIRTH/node.",
    how: "every NBIRTH's topic",
    check: topicForm("NBIRTH"),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-payload",
    requires: "NBIRTH's payload is a Sparkplug B protobuf.",
    how: "every NBIRTH decodes with the spec's schema",
    check: decodes("NBIRTH"),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-qos",
    requires: "NBIRTH is published at QoS 0.",
    how: "QoS and retain flag of every NBIRTH PUBLISH",
    check: qos0NotRetained("NBIRTH"),
  },
  {
    id: "tck-id-payloads-nbirth-qos",
    requires: "NBIRTH is published at QoS 0.",
    how: "QoS of every NBIRTH PUBLISH",
    check: qos0NotRetained("NBIRTH"),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-retained",
    requires: "NBIRTH is not retained.",
    how: "retain flag of every NBIRTH PUBLISH",
    check: qos0NotRetained("NBIRTH"),
  },
  {
    id: "tck-id-payloads-nbirth-retain",
    requires: "NBIRTH is not retained.",
    how: "retain flag of every NBIRTH PUBLISH",
    check: qos0NotRetained("NBIRTH"),
  },
  {
    id: "tck-id-topics-nbirth-mqtt",
    requires: "NBIRTH: QoS 0, not retained.",
    how: "QoS and retain flag of every NBIRTH PUBLISH",
    check: qos0NotRetained("NBIRTH"),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-seq",
    requires: "NBIRTH carries a seq from 0 to 255.",
    how: "seq of every NBIRTH (it is 0)",
    check: (walk) => {
      seqIncluded("NBIRTH")(walk);
      for (const m of all(walk, "NBIRTH")) assert.equal(m.payload?.seq, 0);
    },
  },
  {
    id: "tck-id-payloads-nbirth-seq",
    requires: "NBIRTH carries a seq from 0 to 255.",
    how: "seq of every NBIRTH",
    check: seqIncluded("NBIRTH"),
  },
  {
    id: "tck-id-payloads-sequence-num-req-nbirth",
    requires: "NBIRTH always carries a seq from 0 to 255.",
    how: "seq of every NBIRTH",
    check: seqIncluded("NBIRTH"),
  },
  {
    id: "tck-id-topics-nbirth-seq-num",
    requires: "NBIRTH's seq is 0.",
    how: "seq of every NBIRTH, the first, the Rebirth's and those after reconnects",
    check: (walk) => {
      for (const m of all(walk, "NBIRTH")) assert.equal(m.payload?.seq, 0, where(m));
    },
  },
  {
    id: "tck-id-payloads-nbirth-timestamp",
    requires: "NBIRTH carries the time it was published.",
    how: "every NBIRTH's payload timestamp is epoch ms between the scenario's start and the moment the tap saw it",
    check: payloadTimestamp("NBIRTH"),
  },
  {
    id: "tck-id-topics-nbirth-timestamp",
    requires: "NBIRTH carries the time it was sent.",
    how: "payload timestamp of every NBIRTH, as above",
    check: payloadTimestamp("NBIRTH"),
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-nbirth-payload-bdseq",
    requires: "NBIRTH carries the bdSeq of the will in the CONNECT of its session.",
    how: "every NBIRTH's bdSeq against the will of the CONNECT that opened its connection",
    check: birthBdSeqIsWills,
  },
  {
    id: "tck-id-payloads-nbirth-bdseq",
    requires: "NBIRTH has a bdSeq metric.",
    how: "every NBIRTH has `bdSeq`, Int64, 0–255",
    check: hasBdSeq,
  },
  {
    id: "tck-id-topics-nbirth-bdseq-included",
    requires: "NBIRTH has a bdSeq metric.",
    how: "every NBIRTH has `bdSeq`, Int64, 0–255",
    check: hasBdSeq,
  },
  {
    id: "tck-id-payloads-nbirth-bdseq-repeat",
    requires: "NBIRTH's bdSeq equals the one in the will of the preceding CONNECT.",
    how: "every NBIRTH's bdSeq against its connection's will",
    check: birthBdSeqIsWills,
  },
  {
    id: "tck-id-topics-nbirth-bdseq-matching",
    requires: "NBIRTH's bdSeq matches the CONNECT's will.",
    how: "every NBIRTH's bdSeq against its connection's will",
    check: birthBdSeqIsWills,
  },
  {
    id: "tck-id-payloads-ndeath-bdseq",
    requires: "NDEATH has the bdSeq of the NBIRTH it goes with.",
    how: "every will's bdSeq equals the NBIRTHs of its connection; every published NDEATH equals its connection's will",
    check: (walk) => {
      birthBdSeqIsWills(walk);
      ndeathPayload(walk);
    },
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-name",
    requires: "NBIRTH has a metric named `Node Control/Rebirth`.",
    how: "every NBIRTH",
    check: rebirthMetric,
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-datatype",
    requires: "NBIRTH's `Node Control/Rebirth` is Boolean.",
    how: "every NBIRTH",
    check: rebirthMetric,
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-value",
    requires: "NBIRTH's `Node Control/Rebirth` is false.",
    how: "every NBIRTH",
    check: rebirthMetric,
  },
  {
    id: "tck-id-payloads-nbirth-rebirth-req",
    requires: "NBIRTH has `Node Control/Rebirth`, Boolean, false.",
    how: "every NBIRTH",
    check: rebirthMetric,
  },
  {
    id: "tck-id-topics-nbirth-rebirth-metric",
    requires: "NBIRTH has `Node Control/Rebirth`, Boolean, false.",
    how: "every NBIRTH",
    check: rebirthMetric,
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-name-aliases",
    requires: "With aliases, `Node Control/Rebirth` has none in NBIRTH.",
    how: "no metric of any NBIRTH has an alias",
    check: rebirthMetric,
  },
  {
    id: "tck-id-topics-nbirth-metrics",
    requires: "Each NBIRTH metric has a name, a datatype and its current value.",
    how: "every NBIRTH metric: name, datatype, one value field or is_null without one",
    check: completeMetrics(["NBIRTH"]),
  },
  {
    id: "tck-id-operational-behavior-data-publish-nbirth-values",
    requires: "NBIRTH metrics carry their current value, or is_null and no value.",
    how: "as above, and the NBIRTH after Rebirth reports `Connection/MQTT` true (changed since the first) and a null `Connection/Primary Host Online`",
    check: birthValuesCurrent("NBIRTH"),
  },
  // ---- DBIRTH ----
  {
    id: "tck-id-message-flow-device-birth-publish-nbirth-wait",
    requires: "No DBIRTH before this session's NBIRTH.",
    how: "every DBIRTH belongs to a session that an NBIRTH on the same connection opened",
    check: dataAfterBirths("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-order",
    requires: "DBIRTHs come right after the NBIRTH, before any NDATA or DDATA.",
    how: "after each NBIRTH the next messages are one DBIRTH per camera",
    check: birthSequence,
  },
  {
    id: "tck-id-message-flow-device-birth-publish-dbirth-match-edge-node-topic",
    requires: "DBIRTH's group and node ids are the NBIRTH's.",
    how: "every DBIRTH topic has the NBIRTH's group and node",
    check: topicForm("DBIRTH"),
  },
  {
    id: "tck-id-message-flow-device-birth-publish-dbirth-topic",
    requires: "DBIRTH goes to spBv1.0/group/DBIRTH/node/device.",
    how: "every DBIRTH's topic, the device a configured camera",
    check: topicForm("DBIRTH"),
  },
  {
    id: "tck-id-topics-dbirth-topic",
    requires: "DBIRTH's topic is namespace/group/DBIRTH/node/device.",
    how: "every DBIRTH's topic",
    check: topicForm("DBIRTH"),
  },
  {
    id: "tck-id-message-flow-device-birth-publish-dbirth-payload",
    requires: "DBIRTH's payload is a Sparkplug B protobuf.",
    how: "every DBIRTH decodes with the spec's schema",
    check: decodes("DBIRTH"),
  },
  {
    id: "tck-id-message-flow-device-birth-publish-dbirth-qos",
    requires: "DBIRTH is published at QoS 0.",
    how: "QoS of every DBIRTH PUBLISH",
    check: qos0NotRetained("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-qos",
    requires: "DBIRTH is published at QoS 0.",
    how: "QoS of every DBIRTH PUBLISH",
    check: qos0NotRetained("DBIRTH"),
  },
  {
    id: "tck-id-message-flow-device-birth-publish-dbirth-retained",
    requires: "DBIRTH is not retained.",
    how: "retain flag of every DBIRTH PUBLISH",
    check: qos0NotRetained("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-retain",
    requires: "DBIRTH is not retained.",
    how: "retain flag of every DBIRTH PUBLISH",
    check: qos0NotRetained("DBIRTH"),
  },
  {
    id: "tck-id-topics-dbirth-mqtt",
    requires: "DBIRTH: QoS 0, not retained.",
    how: "QoS and retain flag of every DBIRTH PUBLISH",
    check: qos0NotRetained("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-seq",
    requires: "DBIRTH carries a seq.",
    how: "seq of every DBIRTH, 0–255",
    check: seqIncluded("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-seq-inc",
    requires: "DBIRTH's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every DBIRTH against the message before it in its session",
    check: seqFollows("DBIRTH"),
  },
  {
    id: "tck-id-topics-dbirth-seq",
    requires: "DBIRTH's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every DBIRTH against the message before it in its session",
    check: seqFollows("DBIRTH"),
  },
  {
    id: "tck-id-payloads-dbirth-timestamp",
    requires: "DBIRTH carries the time it was published.",
    how: "payload timestamp of every DBIRTH",
    check: payloadTimestamp("DBIRTH"),
  },
  {
    id: "tck-id-topics-dbirth-timestamp",
    requires: "DBIRTH carries the time it was sent.",
    how: "payload timestamp of every DBIRTH",
    check: payloadTimestamp("DBIRTH"),
  },
  {
    id: "tck-id-topics-dbirth-metrics",
    requires: "Each DBIRTH metric has a name, a datatype and its current value.",
    how: "every DBIRTH metric: name, datatype, one value field or is_null without one",
    check: completeMetrics(["DBIRTH"]),
  },
  {
    id: "tck-id-operational-behavior-data-publish-dbirth-values",
    requires: "DBIRTH metrics carry their current value, or is_null and no value.",
    how: "as above, and the DBIRTHs after Rebirth carry cam1's threshold set by DCMD, cam3's Enabled false and cam1's last defect",
    check: birthValuesCurrent("DBIRTH"),
  },
  // ---- NDATA, DDATA ----
  {
    id: "tck-id-topics-ndata-topic",
    requires: "NDATA goes to namespace/group/NDATA/node.",
    how: "every NDATA's topic",
    check: topicForm("NDATA"),
  },
  {
    id: "tck-id-topics-ndata-payload",
    requires: "NDATA carries the node metrics that changed since the last NBIRTH or NDATA.",
    how: "each NDATA metric differs from the host's picture (NBIRTH plus the NDATAs before it; Uptime rides along), and that picture equals the control's state once the reports settled",
    check: reportByException("node"),
  },
  {
    id: "tck-id-payloads-ndata-order",
    requires: "No NDATA before the NBIRTH and every DBIRTH.",
    how: "every NDATA follows its session's complete birth sequence",
    check: dataAfterBirths("NDATA"),
  },
  {
    id: "tck-id-payloads-ndata-qos",
    requires: "NDATA is published at QoS 0.",
    how: "QoS of every NDATA PUBLISH",
    check: qos0NotRetained("NDATA"),
  },
  {
    id: "tck-id-payloads-ndata-retain",
    requires: "NDATA is not retained.",
    how: "retain flag of every NDATA PUBLISH",
    check: qos0NotRetained("NDATA"),
  },
  {
    id: "tck-id-topics-ndata-mqtt",
    requires: "NDATA: QoS 0, not retained.",
    how: "QoS and retain flag of every NDATA PUBLISH",
    check: qos0NotRetained("NDATA"),
  },
  {
    id: "tck-id-payloads-ndata-seq",
    requires: "NDATA carries a seq.",
    how: "seq of every NDATA, 0–255",
    check: seqIncluded("NDATA"),
  },
  {
    id: "tck-id-topics-ndata-seq-num",
    requires: "NDATA's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every NDATA against the message before it in its session",
    check: seqFollows("NDATA"),
  },
  {
    id: "tck-id-payloads-ndata-timestamp",
    requires: "NDATA carries the time it was published.",
    how: "payload timestamp of every NDATA",
    check: payloadTimestamp("NDATA"),
  },
  {
    id: "tck-id-topics-ndata-timestamp",
    requires: "NDATA carries the time it was sent.",
    how: "payload timestamp of every NDATA",
    check: payloadTimestamp("NDATA"),
  },
  {
    id: "tck-id-topics-ddata-topic",
    requires: "DDATA goes to namespace/group/DDATA/node/device.",
    how: "every DDATA's topic, the device a configured camera",
    check: topicForm("DDATA"),
  },
  {
    id: "tck-id-topics-ddata-payload",
    requires: "DDATA carries the device metrics that changed since its last DBIRTH or DDATA.",
    how: "the host's picture of every camera (DBIRTH plus every DDATA) equals the control's state once the reports settled: counts, threshold, Enabled, State",
    check: reportByException("device"),
  },
  {
    id: "tck-id-payloads-ddata-order",
    requires: "No DDATA before the NBIRTH and every DBIRTH.",
    how: "every DDATA follows its session's complete birth sequence",
    check: dataAfterBirths("DDATA"),
  },
  {
    id: "tck-id-payloads-ddata-qos",
    requires: "DDATA is published at QoS 0.",
    how: "QoS of every DDATA PUBLISH",
    check: qos0NotRetained("DDATA"),
  },
  {
    id: "tck-id-payloads-ddata-retain",
    requires: "DDATA is not retained.",
    how: "retain flag of every DDATA PUBLISH",
    check: qos0NotRetained("DDATA"),
  },
  {
    id: "tck-id-topics-ddata-mqtt",
    requires: "DDATA: QoS 0, not retained.",
    how: "QoS and retain flag of every DDATA PUBLISH",
    check: qos0NotRetained("DDATA"),
  },
  {
    id: "tck-id-payloads-ddata-seq",
    requires: "DDATA carries a seq.",
    how: "seq of every DDATA, 0–255",
    check: seqIncluded("DDATA"),
  },
  {
    id: "tck-id-topics-ddata-seq-num",
    requires: "DDATA's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every DDATA against the message before it, over more than 256 messages",
    check: seqFollows("DDATA"),
  },
  {
    id: "tck-id-payloads-ddata-timestamp",
    requires: "DDATA carries the time it was published.",
    how: "payload timestamp of every DDATA",
    check: payloadTimestamp("DDATA"),
  },
  {
    id: "tck-id-topics-ddata-timestamp",
    requires: "DDATA carries the time it was sent.",
    how: "payload timestamp of every DDATA",
    check: payloadTimestamp("DDATA"),
  },
  // ---- every message ----
  {
    id: "tck-id-payloads-sequence-num-always-included",
    requires: "Every message but NDEATH carries a seq.",
    how: "seq present in every NBIRTH, DBIRTH, NDATA, DDATA and DDEATH",
    check: (walk) => {
      for (const verb of [...BIRTH_AND_DATA, "DDEATH"]) seqIncluded(verb)(walk);
    },
  },
  {
    id: "tck-id-payloads-name-birth-data-requirement",
    requires: "Every metric of NBIRTH, DBIRTH, NDATA and DDATA has a timestamp.",
    how: "timestamp present on every metric of those messages",
    check: (walk) => {
      for (const { message, metric } of metricsOf(walk, BIRTH_AND_DATA)) {
        assert.ok(metric.timestamp !== undefined, `${where(message)} ${metric.name}: no timestamp`);
      }
    },
  },
  {
    id: "tck-id-payloads-metric-timestamp-in-utc",
    requires: "Metric timestamps are UTC epoch milliseconds.",
    how: "every metric timestamp lies between the scenario's start and the moment its message was sent (capture times of results included)",
    check: (walk) => {
      for (const run of [walk.session, walk.primary]) {
        for (const m of run.sent) {
          for (const metric of m.payload?.metrics ?? []) {
            if (metric.timestamp === undefined) continue;
            assert.ok(
              metric.timestamp >= run.startedAt - 1 && metric.timestamp <= m.at + 1,
              `${where(m)} ${metric.name}`,
            );
          }
        }
      }
    },
  },
  {
    id: "tck-id-payloads-name-requirement",
    requires: "Every metric has a name unless aliases are used.",
    how: "every metric of every message is named, none has an alias",
    check: namedNoAliases,
  },
  {
    id: "tck-id-case-sensitivity-metric-names",
    requires: "SHOULD: no two metric names of the node (or of one device) that differ only in case.",
    how: "the names of each NBIRTH and each DBIRTH, lower-cased, are distinct",
    check: (walk) => {
      for (const m of [...all(walk, "NBIRTH"), ...all(walk, "DBIRTH")]) {
        const names = (m.payload?.metrics ?? []).map((x) => x.name!.toLowerCase());
        assert.equal(new Set(names).size, names.length, `${where(m)}: names differing only in case`);
      }
    },
  },
  {
    id: "tck-id-payloads-metric-datatype-req",
    requires: "Every metric of NBIRTH and DBIRTH has a datatype.",
    how: "datatype present on every birth metric",
    check: completeMetrics(BIRTHS),
  },
  {
    id: "tck-id-payloads-metric-datatype-value",
    requires: "A datatype is one of the spec's DataType values.",
    how: "every metric's datatype is a code of the schema's DataType enum (not Unknown) and its value is in that type's field",
    check: validDatatypes,
  },
  {
    id: "tck-id-payloads-metric-datatype-value-type",
    requires: "A datatype is an unsigned 32-bit integer.",
    how: "every metric's datatype decodes as the schema's uint32 and is one of its codes",
    check: validDatatypes,
  },
  {
    id: "tck-id-payloads-metric-datatype-not-req",
    requires: "SHOULD: NDATA, DDATA, NCMD and DCMD metrics leave the datatype out.",
    how: "pins the deviation: every NDATA and DDATA metric keeps its datatype",
    deviation:
      "the node keeps the datatype in NDATA and DDATA: a host that decodes with the widely used sparkplug-payload (as Node-RED's Sparkplug nodes do) cannot read a value without it, and the bytes saved are two per metric",
    check: (walk) => {
      for (const { metric } of metricsOf(walk, ["NDATA", "DDATA"])) assert.ok(metric.datatype !== undefined);
    },
  },
  // ---- deaths ----
  {
    id: "tck-id-topics-ndeath-topic",
    requires: "NDEATH goes to namespace/group/NDEATH/node.",
    how: "every NDEATH the node published and every will's topic",
    check: (walk) => {
      topicForm("NDEATH")(walk);
      everyWill("NDEATH topic", (will, run) => will.topic === topicOf(run, "NDEATH"))(walk);
    },
  },
  {
    id: "tck-id-topics-ndeath-payload",
    requires: "NDEATH's payload has one metric, bdSeq.",
    how: "every published NDEATH and every will: exactly one metric, `bdSeq`, equal to its connection's will",
    check: (walk) => {
      ndeathPayload(walk);
      everyWill("only bdSeq", (will) => decodeSpec(toBuffer(will.payload)).metrics?.length === 1)(walk);
    },
  },
  {
    id: "tck-id-payloads-ndeath-seq",
    requires: "NDEATH has no seq.",
    how: "no seq in any published NDEATH or will",
    check: noDeathSeq,
  },
  {
    id: "tck-id-topics-ndeath-seq",
    requires: "NDEATH has no seq.",
    how: "no seq in any published NDEATH or will",
    check: noDeathSeq,
  },
  {
    id: "tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath",
    requires: "Before disconnecting on purpose the node publishes NDEATH.",
    how: "on stop: NDEATH (QoS 1, the will's bdSeq) then DISCONNECT as the next packet",
    check: intentionalDisconnect((w) => w.session, "stop"),
  },
  {
    id: "tck-id-operational-behavior-edge-node-intentional-disconnect-packet",
    requires: "MAY: a DISCONNECT right after that NDEATH.",
    how: "the packet after the stop's NDEATH on that connection is DISCONNECT",
    check: intentionalDisconnect((w) => w.session, "stop"),
  },
  {
    id: "tck-id-payloads-ndeath-will-message-publisher",
    requires: "SHOULD: the node publishes NDEATH before it disconnects on purpose.",
    how: "on stop and on the primary host's offline STATE: NDEATH, then DISCONNECT",
    check: (walk) => {
      intentionalDisconnect((w) => w.session, "stop")(walk);
      intentionalDisconnect((w) => w.primary, "offline")(walk);
    },
  },
  {
    id: "tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt311",
    requires: "With MQTT 3.1.1, NDEATH is published before the DISCONNECT.",
    how: "on stop and on an offline STATE, NDEATH precedes DISCONNECT on the same connection",
    check: (walk) => {
      mqtt311(walk);
      intentionalDisconnect((w) => w.session, "stop")(walk);
      intentionalDisconnect((w) => w.primary, "offline")(walk);
    },
  },
  {
    id: "tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt50",
    requires: "With MQTT 5.0 the DISCONNECT has the reason code 'Disconnect with Will Message'.",
    how: "checks that every CONNECT is MQTT 3.1.1",
    na: NA_MQTT5,
    check: mqtt311,
  },
  {
    id: "tck-id-operational-behavior-device-ddeath",
    requires: "When the node loses a device it publishes DDEATH for it.",
    how: "a camera that a reload removed gets a DDEATH; a camera disabled by DCMD stays born (Enabled false, State disabled): it is not lost, see 'Disabled cameras'",
    check: ddeathOnLoss,
  },
  {
    id: "tck-id-topics-ddeath-topic",
    requires: "DDEATH goes to namespace/group/DDEATH/node/device.",
    how: "every DDEATH's topic",
    check: topicForm("DDEATH"),
  },
  {
    id: "tck-id-topics-ddeath-mqtt",
    requires: "DDEATH: QoS 0, not retained.",
    how: "QoS and retain flag of every DDEATH PUBLISH",
    check: qos0NotRetained("DDEATH"),
  },
  {
    id: "tck-id-payloads-ddeath-seq",
    requires: "DDEATH carries a seq.",
    how: "seq of every DDEATH",
    check: seqIncluded("DDEATH"),
  },
  {
    id: "tck-id-payloads-ddeath-seq-number",
    requires: "DDEATH carries a seq so a host can order it.",
    how: "seq of every DDEATH",
    check: seqIncluded("DDEATH"),
  },
  {
    id: "tck-id-payloads-ddeath-seq-inc",
    requires: "DDEATH's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every DDEATH against the message before it",
    check: seqFollows("DDEATH"),
  },
  {
    id: "tck-id-topics-ddeath-seq-num",
    requires: "DDEATH's seq is the previous message's plus one, 255 wrapping to 0.",
    how: "seq of every DDEATH against the message before it in its session",
    check: seqFollows("DDEATH"),
  },
  {
    id: "tck-id-payloads-ddeath-timestamp",
    requires: "DDEATH carries the time it was published.",
    how: "payload timestamp of every DDEATH",
    check: payloadTimestamp("DDEATH"),
  },
  // ---- commands ----
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-action-1",
    requires: "On a Rebirth request the node stops sending DATA at once.",
    how: "after the Rebirth NCMD reached the node (seen on the wire), its next PUBLISH is NBIRTH",
    check: rebirthStopsData,
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-action-2",
    requires: "Then it sends the whole birth sequence, NBIRTH and every DBIRTH.",
    how: "NBIRTH then one DBIRTH per camera (the disabled one included) right after the NCMD",
    check: rebirthSequence,
  },
  {
    id: "tck-id-operational-behavior-data-commands-rebirth-action-3",
    requires: "That NBIRTH has the bdSeq of the current CONNECT's will.",
    how: "the rebirth's bdSeq equals its connection's will and the session's first NBIRTH",
    check: rebirthSameBdSeq,
  },
  // ---- primary host ----
  {
    id: "tck-id-message-flow-edge-node-birth-publish-phid-wait",
    requires: "With a primary host, no births before its STATE says it is online.",
    how: "no PUBLISH at all before the online STATE reached the node",
    check: waitsForHost,
  },
  {
    id: "tck-id-operational-behavior-edge-node-birth-sequence-wait",
    requires: "The births wait for an online=true STATE.",
    how: "no PUBLISH at all before the online STATE reached the node",
    check: waitsForHost,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-phid-wait-id",
    requires: "Only the configured host's STATE topic counts.",
    how: "another host's retained online STATE: not delivered to the node (it subscribes to its host only), no births",
    check: ignoresOtherHosts,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-phid-wait-online",
    requires: "The host is online only when its STATE has online true.",
    how: "an offline STATE reached the waiting node: no births",
    check: needsOnlineTrue,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp",
    requires:
      "A STATE counts only if its timestamp is not older than the last one seen; the first one always counts.",
    how: "an online STATE older than the offline one before it reached the waiting node: no births; the fresh one brings them",
    check: needsNewerTimestamp,
  },
  {
    id: "tck-id-message-flow-edge-node-birth-publish-phid-offline",
    requires:
      "An offline STATE (not older than the online one) makes the node publish NDEATH, disconnect and start over.",
    how: "after the offline STATE: NDEATH, DISCONNECT, a new CONNECT, and births only after the next online STATE",
    check: offlineEndsSession,
  },
  {
    id: "tck-id-operational-behavior-edge-node-termination-host-offline",
    requires: "With a primary host, an offline STATE not older than the last online one ends the connection.",
    how: "after the offline STATE: NDEATH, DISCONNECT, a new CONNECT, births only after the next online STATE",
    check: offlineEndsSession,
  },
  {
    id: "tck-id-operational-behavior-edge-node-termination-host-offline-timestamp",
    requires: "An offline STATE older than the last online one does not end the connection.",
    how: "a stale offline STATE reached the born node: no NDEATH, no DISCONNECT, the connection stays up",
    check: staleOfflineIgnored,
  },
  {
    id: "tck-id-operational-behavior-edge-node-termination-host-offline-reconnect",
    requires: "After such a disconnect the node connects to the next server of its list.",
    how: "its list has one server: it connects to it again (new CONNECT, next bdSeq) and waits for the host",
    check: offlineEndsSession,
  },
  {
    id: "tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk",
    requires: "With several servers, an offline primary host moves the node to the next server.",
    how: "checks the one-server case instead: the node reconnects to its server after the offline STATE",
    na: NA_SERVERS,
    check: offlineEndsSession,
  },
  {
    id: "tck-id-operational-behavior-primary-application-state-with-multiple-servers-single-server",
    requires: "The node is never connected to more than one server at a time.",
    how: "the node's connections through the tap never overlap (each opens after the previous closed)",
    check: oneConnectionAtATime,
  },
  // ---- payload features the node does not use ----
  ...(
    [
      ["tck-id-payloads-alias-birth-requirement", "With aliases, birth metrics carry both name and alias."],
      [
        "tck-id-payloads-alias-data-cmd-requirement",
        "With aliases, DATA and CMD metrics carry the alias only.",
      ],
      ["tck-id-payloads-alias-uniqueness", "An alias is unique across the node's metrics."],
    ] as const
  ).map(
    ([id, requires]): Requirement => ({
      id,
      requires,
      how: "checks that no metric of any message has an alias",
      na: NA_ALIASES,
      check: namedNoAliases,
    }),
  ),
  ...(
    [
      ["tck-id-payloads-dataset-column-num-headers", "A DataSet has as many column names as types."],
      ["tck-id-payloads-dataset-column-size", "A DataSet's num_of_columns is a uint64."],
      ["tck-id-payloads-dataset-parameter-type-req", "Every DataSet has a types array."],
      ["tck-id-payloads-dataset-types-def", "DataSet types are uint32 datatypes of the columns."],
      ["tck-id-payloads-dataset-types-num", "A DataSet has as many types as columns."],
      ["tck-id-payloads-dataset-types-type", "Each DataSet type is a uint32."],
      ["tck-id-payloads-dataset-types-value", "Each DataSet type is a basic datatype."],
    ] as const
  ).map(
    ([id, requires]): Requirement => ({
      id,
      requires,
      how: "checks that no metric carries a DataSet",
      na: NA_DATASETS,
      check: noDataSets,
    }),
  ),
  ...(
    [
      ["tck-id-payloads-metric-propertyvalue-type-req", "Birth property values carry a type."],
      ["tck-id-payloads-metric-propertyvalue-type-type", "A property value's type is a uint32."],
      [
        "tck-id-payloads-metric-propertyvalue-type-value",
        "A property value's type is a basic or property-value datatype.",
      ],
      ["tck-id-payloads-propertyset-keys-array-size", "A PropertySet has as many keys as values."],
      ["tck-id-payloads-propertyset-values-array-size", "A PropertySet has as many values as keys."],
      ["tck-id-payloads-propertyset-quality-value-type", "A Quality property is of type Int32."],
      ["tck-id-payloads-propertyset-quality-value-value", "A Quality property is 0, 192 or 500."],
    ] as const
  ).map(
    ([id, requires]): Requirement => ({
      id,
      requires,
      how: "checks that no metric carries properties",
      na: NA_PROPERTIES,
      check: noPropertySets,
    }),
  ),
  ...(
    [
      [
        "tck-id-payloads-template-dataset-value",
        "Template and DataSet values use the allowed protobuf types.",
      ],
      ["tck-id-payloads-template-definition-is-definition", "A template definition has is_definition true."],
      [
        "tck-id-payloads-template-definition-members",
        "A template definition has every member its instances use.",
      ],
      ["tck-id-payloads-template-definition-nbirth", "Definitions of the templates used are in NBIRTH."],
      ["tck-id-payloads-template-definition-nbirth-only", "Template definitions appear only in NBIRTH."],
      [
        "tck-id-payloads-template-definition-parameters",
        "A template definition has every parameter its instances use.",
      ],
      [
        "tck-id-payloads-template-definition-parameters-default",
        "MAY: a template definition gives parameter defaults.",
      ],
      ["tck-id-payloads-template-definition-ref", "A template definition has no template_ref."],
      ["tck-id-payloads-template-instance-is-definition", "A template instance has is_definition false."],
      ["tck-id-payloads-template-instance-members", "A template instance has only its definition's members."],
      [
        "tck-id-payloads-template-instance-members-birth",
        "In a birth, a template instance has all its definition's members.",
      ],
      [
        "tck-id-payloads-template-instance-members-data",
        "MAY: in DATA, a template instance has a subset of the members.",
      ],
      [
        "tck-id-payloads-template-instance-parameters",
        "MAY: a template instance sets parameters of its definition.",
      ],
      ["tck-id-payloads-template-instance-ref", "A template instance names its definition in template_ref."],
      ["tck-id-payloads-template-is-definition", "Every template has is_definition."],
      ["tck-id-payloads-template-is-definition-definition", "is_definition is true for a definition."],
      ["tck-id-payloads-template-is-definition-instance", "is_definition is false for an instance."],
      ["tck-id-payloads-template-parameter-name-required", "Every template parameter has a name."],
      ["tck-id-payloads-template-parameter-name-type", "A template parameter's name is a UTF-8 string."],
      ["tck-id-payloads-template-parameter-type-req", "Template parameters in births carry a type."],
      ["tck-id-payloads-template-parameter-type-value", "A template parameter's type is a basic datatype."],
      [
        "tck-id-payloads-template-parameter-value",
        "A template parameter's value uses the allowed protobuf types.",
      ],
      ["tck-id-payloads-template-parameter-value-type", "A template parameter's type is a uint32."],
      ["tck-id-payloads-template-ref-definition", "A definition has no template_ref."],
      ["tck-id-payloads-template-ref-instance", "An instance's template_ref names a definition."],
      ["tck-id-payloads-template-version", "A template version, if any, is a UTF-8 string."],
    ] as const
  ).map(
    ([id, requires]): Requirement => ({
      id,
      requires,
      how: "checks that no metric carries a template",
      na: NA_TEMPLATES,
      check: noTemplates,
    }),
  ),
];

/** The table for docs/line-integration/sparkplug.md, between its tck-table markers. */
export function tckTable(requirements: readonly Requirement[] = REQUIREMENTS): string {
  const cell = (text: string): string => text.replaceAll("|", "\\|").replaceAll("\n", " ");
  const rows = requirements.map((r) => {
    const status =
      r.na !== undefined ? `n/a: ${r.na}` : r.deviation !== undefined ? `deviation: ${r.deviation}` : "met";
    return `| \`${r.id}\` | ${cell(r.requires)} | ${cell(status)} | ${cell(r.how)} |`;
  });
  const met = requirements.filter((r) => r.na === undefined && r.deviation === undefined).length;
  const na = requirements.filter((r) => r.na !== undefined).length;
  const deviations = requirements.length - met - na;
  return [
    `${requirements.length} edge-node requirements: ${met} met, ${na} not applicable, ${deviations} deviation${deviations === 1 ? "" : "s"} from a SHOULD.`,
    "",
    "| requirement | what it asks | status | how the walk checks it |",
    "|---|---|---|---|",
    ...rows,
  ].join("\n");
}
