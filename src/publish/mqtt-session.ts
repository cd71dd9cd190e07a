/**
 * The one way the daemon opens an MQTT connection: the MQTT sink's publisher and the Sparkplug node both connect
 * through an {@link MqttConnector}, so they authenticate, verify the broker, tune the socket and log a broker that
 * keeps refusing them alike. Only what each protocol dictates differs: the client id, the will and whether mqtt.js
 * reconnects by itself (Sparkplug needs a new will per CONNECT, so it reconnects itself).
 */
import { readFile } from "node:fs/promises";
import { connect, type IClientOptions, type MqttClient } from "mqtt";
import type { MqttConfig, MqttTlsConfig } from "../config/index.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { redactUrl } from "../core/redact.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";

/** The broker settings a session needs besides its own client id, will and reconnect policy. */
export type BrokerSettings = Pick<MqttConfig, "username" | "password" | "tls">;

export interface MqttConnectorOptions {
  /** What the connection is, for error messages: "MQTT", "Sparkplug". */
  what: string;
  url: string;
  clientId: string;
  broker: BrokerSettings;
  /** mqtt.js's reconnect period; 0 when the caller reconnects itself with a new client. */
  reconnectPeriodMs: number;
  /** MQTT 3.1.1 (4, the default) or 5.0; the key that chooses it, for the line a broker refusing 5 gets. */
  protocol?: { version: ProtocolVersion; key: string };
  logger: Logger;
  /** Fields added to a connection error's log line (what is waiting meanwhile: queued events, the bdSeq). */
  errorContext?: () => Record<string, unknown>;
}

export type Will = NonNullable<IClientOptions["will"]>;

/** MQTT's protocol level in CONNECT: 4 is MQTT 3.1.1, 5 is MQTT 5.0. */
export type ProtocolVersion = 4 | 5;

/**
 * CONNACK codes of a broker that does not speak the protocol version asked for: 1 is 3.1.1's "unacceptable
 * protocol version" (what a 3.1.1-only broker answers a 5.0 CONNECT with), 132 (0x84) MQTT 5's own.
 */
const PROTOCOL_REFUSED_CODES: ReadonlySet<number> = new Set([1, 132]);

/**
 * Opens MQTT clients with one set of options. {@link prepare} reads the TLS files once; {@link connect} opens a
 * client (each with its own will). Every client it opens turns Nagle's algorithm off on each new socket and reports
 * its connection errors to one log: the first of each distinct error is a warning, its repeats are debug lines but
 * for one warning a minute (counting the attempts), so a log read hours into a refused login still says why
 * nothing is delivered, without a line per reconnect attempt.
 */
export class MqttConnector {
  /** The broker URL with any password masked, for logs. */
  readonly safeUrl: string;
  private readonly options: MqttConnectorOptions;
  private connectOptions: Partial<IClientOptions> | undefined;
  private readonly repeats = new RepeatLimiter();
  private lastErrorMessage: string | undefined;
  private failedAttempts = 0;

  constructor(options: MqttConnectorOptions) {
    this.options = options;
    this.safeUrl = redactUrl(options.url);
  }

  /** Why the last connection attempt failed (e.g. "Connection refused: Not authorized"), until one succeeds. */
  get lastError(): string | undefined {
    return this.lastErrorMessage;
  }

  /** Reads the credentials and TLS files; throws an `ERR_INPUT_MISSING` StpmdError naming a TLS file it cannot read. */
  async prepare(): Promise<void> {
    this.connectOptions = await brokerConnectOptions(this.options.broker);
  }

  /**
   * Starts connecting a client with `will`; throws an `ERR_CONFIG_INVALID` StpmdError naming the URL when mqtt.js
   * refuses it. The client is clean-session and does not queue QoS 0 messages while offline (results are dropped
   * and counted instead of piling up in memory); subscriptions are the caller's to renew on each `connect`.
   */
  connect(will: Will): MqttClient {
    if (this.connectOptions === undefined) throw new Error("MqttConnector.connect() before prepare()");
    const options: IClientOptions = {
      ...this.connectOptions,
      clientId: this.options.clientId,
      clean: true,
      protocolVersion: this.options.protocol?.version ?? 4,
      reconnectPeriod: this.options.reconnectPeriodMs,
      // mqtt.js 5 gives up for good after a refused CONNACK (bad password, ACL, banned client id) unless told
      // otherwise; a broker whose password file is fixed later must still get our queued events.
      reconnectOnConnackError: true,
      queueQoSZero: false,
      // the owner resubscribes on every connect itself, where it can log what the broker refused
      resubscribe: false,
      will,
    };
    let client: MqttClient;
    try {
      client = connect(this.options.url, options);
    } catch (err) {
      throw new StpmdError(
        "ERR_CONFIG_INVALID",
        `${this.options.what} url ${this.safeUrl}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    client.on("connect", () => {
      // mqtt.js leaves Nagle's algorithm on: a message written right after another one (a command's response
      // after the PUBACK of its request, a result after a defect) then waits for the broker's delayed ACK, ~40 ms
      // on Linux. Each connection has a new socket; WebSocket streams have no such switch.
      (client.stream as { setNoDelay?: (noDelay: boolean) => void } | undefined)?.setNoDelay?.(true);
      this.lastErrorMessage = undefined;
      this.failedAttempts = 0;
      this.repeats.clear();
    });
    client.on("error", (err) => this.onError(err));
    return client;
  }

  private onError(err: Error): void {
    const message = this.explained(err);
    const repeat = message === this.lastErrorMessage;
    this.failedAttempts = repeat ? this.failedAttempts + 1 : 1;
    this.lastErrorMessage = message;
    const fields = {
      url: this.safeUrl,
      err: message,
      attempts: this.failedAttempts,
      ...this.options.errorContext?.(),
    };
    if (this.repeats.admit(message) === undefined) {
      this.options.logger.debug(fields, `${this.options.what} connection error`);
      return;
    }
    this.options.logger.warn(
      fields,
      repeat
        ? `${this.options.what} connection still failing; retrying`
        : `${this.options.what} connection error; retrying`,
    );
  }

  /** The error's message; for a broker refusing the protocol version, what to set instead. */
  private explained(err: Error): string {
    const message = errorMessage(err);
    const code = (err as { code?: unknown }).code;
    const protocol = this.options.protocol;
    if (protocol?.version !== 5 || typeof code !== "number" || !PROTOCOL_REFUSED_CODES.has(code))
      return message;
    return `the broker does not accept MQTT 5 (${message}); set ${protocol.key}: 4 for a broker that speaks only MQTT 3.1.1`;
  }
}

/**
 * The mqtt.js options for credentials and TLS (the CA, client certificate and key files read now). Throws an
 * `ERR_INPUT_MISSING` StpmdError naming the TLS file that cannot be read.
 */
async function brokerConnectOptions(broker: BrokerSettings): Promise<Partial<IClientOptions>> {
  const options: Partial<IClientOptions> = await readTlsFiles(broker.tls);
  if (broker.username !== undefined) options.username = broker.username;
  if (broker.password !== undefined) options.password = broker.password;
  return options;
}

async function readTlsFiles(tls: MqttTlsConfig | undefined): Promise<Partial<IClientOptions>> {
  if (tls === undefined) return {};
  const read = async (key: "ca" | "cert" | "key"): Promise<Buffer | undefined> => {
    const file = tls[key];
    if (file === undefined) return undefined;
    try {
      return await readFile(file);
    } catch (err) {
      throw new StpmdError("ERR_INPUT_MISSING", `MQTT tls.${key} file ${file}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  };
  const options: Partial<IClientOptions> = {};
  const [ca, cert, key] = await Promise.all([read("ca"), read("cert"), read("key")]);
  if (ca !== undefined) options.ca = ca;
  if (cert !== undefined) options.cert = cert;
  if (key !== undefined) options.key = key;
  options.rejectUnauthorized = tls.reject_unauthorized;
  return options;
}
