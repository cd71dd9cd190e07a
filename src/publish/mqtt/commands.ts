/**
 * Commands over MQTT, request/response with a transaction id (Zigbee2MQTT's `bridge/request` convention): a client
 * publishes a JSON object to `<prefix>/command/<name>` and the daemon answers on `<prefix>/command/<name>/response`
 * with `{transaction, status: "ok", data}` or `{transaction, status: "error", error}`. An MQTT 5 request that names
 * a Response Topic is answered there instead, with the request's Correlation Data (MQTT 5's own request/response,
 * section 4.10 of the standard); the payload is the same. The commands themselves are the shared
 * {@link CommandExecutor}'s.
 *
 * MQTT rides on the publisher's session (one connection per daemon: one login for the broker's ACL, one
 * implementation of reconnects and TLS).
 */
import { settledWithin } from "../../core/deadline.js";
import type { Logger } from "../../core/log.js";
import { COMMAND_NAMES, CommandExecutor } from "../commands.js";
import type { LineControl, Requester } from "../control.js";
import { type CommandResponsePayload, type Topics, topicNameProblem } from "../topics.js";
import type { MessageProperties, MqttSession } from "./publisher.js";

/**
 * MQTT carries no per-message identity (the broker knows the publisher's login, but does not pass it on), so
 * commands are logged as `via: "mqtt"` without a user; who may send them is the broker ACL's decision.
 */
const MQTT_REQUESTER: Requester = { via: "mqtt" };

export interface MqttCommandsOptions {
  session: MqttSession;
  topics: Topics;
  control: LineControl;
  logger: Logger;
  /** The executor shared with the other interfaces that take commands (default: one of its own). */
  executor?: CommandExecutor;
}

/** How long stop() waits for responses in flight (a response reaches a working broker in milliseconds). */
const RESPONSES_WAIT_MS = 2_000;

export class MqttCommands {
  readonly name = "mqtt-commands";
  private readonly session: MqttSession;
  private readonly topics: Topics;
  private readonly executor: CommandExecutor;
  private readonly logger: Logger;
  private unsubscribe: (() => void) | undefined;
  private responses = new Set<Promise<void>>();

  constructor(options: MqttCommandsOptions) {
    this.session = options.session;
    this.topics = options.topics;
    this.executor = options.executor ?? new CommandExecutor(options.control, options.logger);
    this.logger = options.logger.child({ component: "mqtt-commands" });
  }

  async start(): Promise<void> {
    const filter = this.topics.commandFilter();
    this.unsubscribe = this.session.subscribe(filter, 1, (topic, payload, properties) =>
      this.onRequest(topic, payload, properties),
    );
    this.logger.info({ topic: filter, commands: COMMAND_NAMES }, "accepting MQTT commands");
  }

  /**
   * Stops taking requests and waits for the ones already taken (their responses are still sent), for at most
   * {@link RESPONSES_WAIT_MS}: a QoS 1 response waits for the broker's acknowledgement, which with the broker gone
   * never comes while the client keeps reconnecting, and a shutdown must not wait for a broker.
   */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const pending = this.responses.size;
    if (pending === 0) return;
    if (!(await settledWithin(Promise.all(this.responses), RESPONSES_WAIT_MS))) {
      this.logger.warn(
        { unsent: this.responses.size },
        `stopping without waiting longer for ${this.responses.size} of ${pending} command responses: the broker has not acknowledged them within ${RESPONSES_WAIT_MS} ms`,
      );
    }
  }

  private onRequest(topic: string, payload: Buffer, properties: MessageProperties): void {
    const name = this.topics.commandName(topic);
    if (name === undefined) return;
    const replyTo = this.replyTopic(name, properties);
    const sent = this.executor
      .execute(name, payload, MQTT_REQUESTER)
      .then((response) => this.respond(name, replyTo, properties.correlationData, response))
      .catch((err: unknown) => this.logger.error({ command: name, err }, "command response failed"))
      .finally(() => this.responses.delete(sent));
    this.responses.add(sent);
  }

  /**
   * Where the response goes: the request's Response Topic, else `<prefix>/command/<name>/response`. A Response
   * Topic the daemon could not publish to (a wildcard in it; the broker should have refused such a request), or
   * one of its own topics (an answer on `<prefix>/cam1/result` would pose as a result, one on a request topic as
   * a request), falls back to the convention's topic, logged, so the requester still gets an answer.
   */
  private replyTopic(name: string, properties: MessageProperties): string {
    const requested = properties.responseTopic;
    if (requested === undefined) return this.topics.commandResponse(name);
    const problem =
      topicNameProblem(requested) ??
      (this.topics.isOwn(requested) ? "is one of the daemon's own topics" : undefined);
    if (problem === undefined) return requested;
    this.logger.warn(
      { command: name, response_topic: requested },
      `Response Topic ${problem}; answering on ${this.topics.commandResponse(name)} instead`,
    );
    return this.topics.commandResponse(name);
  }

  private async respond(
    name: string,
    topic: string,
    correlationData: Buffer | undefined,
    response: CommandResponsePayload,
  ): Promise<void> {
    const sent = await this.session.publishMessage(
      topic,
      Buffer.from(JSON.stringify(response), "utf8"),
      1,
      correlationData,
    );
    if (!sent) {
      this.logger.warn(
        { command: name, topic, transaction: response.transaction },
        "command response not sent (offline, or the broker refused the topic)",
      );
    }
  }
}
