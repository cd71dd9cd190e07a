/**
 * Commands over MQTT, request/response with a transaction id (Zigbee2MQTT's `bridge/request` convention): a client
 * publishes a JSON object to `<prefix>/command/<name>` and the daemon answers on `<prefix>/command/<name>/response`
 * with `{transaction, status: "ok", data}` or `{transaction, status: "error", error}`.
 *
 * It rides on the publisher's MQTT session (one connection per daemon: one login for the broker's ACL, one
 * implementation of reconnects and TLS). Every request is validated against its schema before anything is called,
 * so bad JSON, an unknown command or a wrong type is answered with an error and changes nothing; requests run one
 * at a time, in arrival order, so responses come in the order the requests did and a reload never interleaves
 * with a threshold change.
 */
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { type ThresholdRule, thresholdRuleSchema } from "../config/index.js";
import { formatKeyPath, type Problem } from "../config/problems.js";
import { schemaProblems } from "../config/validate.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { MqttSession } from "../publish/publisher.js";
import type { CommandResponsePayload, Topics } from "../publish/topics.js";
import { ControlError, type LineControl, type LineInterface, type Requester } from "./control.js";

/** A request larger than this is refused unparsed: no command needs more than a few hundred bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Requests waiting behind a running one (a reload can take seconds); beyond this they are refused as busy. */
export const MAX_PENDING_COMMANDS = 32;

/**
 * MQTT carries no per-message identity (the broker knows the publisher's login, but does not pass it on), so
 * commands are logged as `via: "mqtt"` without a user; who may send them is the broker ACL's decision.
 */
const REQUESTER: Requester = { via: "mqtt" };

const transaction = Type.Optional(
  Type.Union([Type.String({ maxLength: 256 }), Type.Number()], {
    description: "Echoed in the response, so a client can match it to its request.",
  }),
);
const camera = Type.String({ description: "Camera id.", minLength: 1 });

/** The payload of each command; `additionalProperties: false` so a misspelt key is an error, not a no-op. */
const requestSchemas = {
  reload: Type.Object({ transaction }, { additionalProperties: false }),
  status: Type.Object({ transaction }, { additionalProperties: false }),
  set_threshold: Type.Object(
    {
      transaction,
      camera,
      threshold: Type.Union(
        [
          Type.Number({ exclusiveMinimum: 0 }),
          thresholdRuleSchema("`{value: x}`, `{sigma: k}` or `{false_alarm_rate: p}`."),
        ],
        {
          description:
            "a number > 0, {value: x > 0}, {sigma: k} (0 <= k <= 100) or {false_alarm_rate: p} (0 < p < 1)",
        },
      ),
    },
    { additionalProperties: false },
  ),
  enable_camera: Type.Object(
    { transaction, camera, enabled: Type.Boolean() },
    { additionalProperties: false },
  ),
  collection: Type.Object({ transaction, enabled: Type.Boolean() }, { additionalProperties: false }),
} satisfies Record<string, TSchema>;

type CommandName = keyof typeof requestSchemas;
type Request<N extends CommandName> = Static<(typeof requestSchemas)[N]>;

/** What a command answers: data for an `ok`, or a refusal with an error (and, for reload, what happened). */
type Outcome = { data: unknown } | { error: string; data?: unknown };

type Runner<N extends CommandName> = (
  control: LineControl,
  request: Request<N>,
) => Outcome | Promise<Outcome>;

const runners: { [N in CommandName]: Runner<N> } = {
  reload: async (control) => {
    const outcome = await control.reload(REQUESTER);
    const data = {
      config_applied: outcome.configApplied,
      problems: outcome.problems,
      swapped: outcome.swapped,
      failed: outcome.failed,
    };
    if (!outcome.configApplied) {
      return {
        error: `configuration not applied (the running one is kept): ${outcome.problems.join("; ")}`,
        data,
      };
    }
    return { data };
  },
  status: (control) => ({ data: control.snapshot() }),
  set_threshold: (control, request) => {
    const rule: ThresholdRule =
      typeof request.threshold === "number" ? { value: request.threshold } : request.threshold;
    const change = control.setThreshold(request.camera, rule, REQUESTER);
    return { data: { camera: request.camera, threshold_rule: rule, old: change.old, new: change.new } };
  },
  enable_camera: async (control, request) => {
    await control.enableCamera(request.camera, request.enabled, REQUESTER);
    return { data: { camera: request.camera, enabled: request.enabled } };
  },
  collection: (control, request) => {
    control.setCollection(request.enabled, REQUESTER);
    return { data: { enabled: request.enabled } };
  },
};

export const COMMAND_NAMES = Object.keys(requestSchemas) as CommandName[];

function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(requestSchemas, name);
}

let validators: Map<CommandName, ValidateFunction> | undefined;

function validatorOf(name: CommandName): ValidateFunction {
  if (validators === undefined) {
    // verbose: errors carry the offending value and schema, which the messages quote
    const ajv = new Ajv({ allErrors: true, strict: true, verbose: true });
    validators = new Map(COMMAND_NAMES.map((n) => [n, ajv.compile(requestSchemas[n])]));
  }
  return validators.get(name)!;
}

/**
 * One line naming every problem of a payload that failed its schema. A value that fits none of a union's
 * branches gets the union's description instead of one complaint per branch.
 */
export function describeSchemaErrors(errors: readonly ErrorObject[], payload: unknown): string {
  const unions = new Map<string, ErrorObject>();
  // Ajv reports a nested union before the one around it: the last one at a path is the outermost.
  for (const error of errors) if (error.keyword === "anyOf") unions.set(error.instancePath, error);
  const inUnion = (path: string) =>
    [...unions.keys()].some((union) => path === union || path.startsWith(`${union}/`));
  const problems: Problem[] = schemaProblems(
    errors.filter((error) => error.keyword !== "anyOf" && !inUnion(error.instancePath)),
    payload,
  );
  const messages = problems.map((problem) => `${formatKeyPath(problem.path, payload)}: ${problem.message}`);
  for (const [path, error] of unions) {
    const description = (error.parentSchema as { description?: string } | undefined)?.description;
    const key = path.slice(1).replace(/\//g, ".");
    messages.push(`${key}: must be ${description ?? "of another type"} (got ${JSON.stringify(error.data)})`);
  }
  return messages.join("; ");
}

type Parsed = { request: Record<string, unknown> } | { error: string };

/** The request object of a payload; an empty payload (`mosquitto_pub -n`) is `{}`, for commands without keys. */
function parseRequest(payload: Buffer): Parsed {
  if (payload.length > MAX_REQUEST_BYTES) {
    return { error: `payload is ${payload.length} bytes; a command request is at most ${MAX_REQUEST_BYTES}` };
  }
  const text = payload.toString("utf8").trim();
  if (text === "") return { request: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `payload is not JSON: ${errorMessage(err)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { error: `payload must be a JSON object (got ${JSON.stringify(value)})` };
  }
  return { request: value as Record<string, unknown> };
}

/** The request's transaction if it is one a response can echo, else undefined. */
function transactionOf(request: Record<string, unknown>): string | number | undefined {
  const value = request.transaction;
  return typeof value === "string" || (typeof value === "number" && Number.isFinite(value))
    ? value
    : undefined;
}

export interface MqttCommandsOptions {
  session: MqttSession;
  topics: Topics;
  control: LineControl;
  logger: Logger;
}

export class MqttCommands implements LineInterface {
  readonly name = "mqtt-commands";
  private readonly session: MqttSession;
  private readonly topics: Topics;
  private readonly control: LineControl;
  private readonly logger: Logger;
  private unsubscribe: (() => void) | undefined;
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(options: MqttCommandsOptions) {
    this.session = options.session;
    this.topics = options.topics;
    this.control = options.control;
    this.logger = options.logger.child({ component: "mqtt-commands" });
  }

  async start(): Promise<void> {
    const filter = this.topics.commandFilter();
    this.unsubscribe = this.session.subscribe(filter, 1, (topic, payload) => this.onRequest(topic, payload));
    this.logger.info({ topic: filter, commands: COMMAND_NAMES }, "accepting MQTT commands");
  }

  /** Stops taking requests and waits for the ones already taken (their responses are still sent). */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.queue;
  }

  private onRequest(topic: string, payload: Buffer): void {
    const name = this.topics.commandName(topic);
    if (name === undefined) return;
    if (this.pending >= MAX_PENDING_COMMANDS) {
      const parsed = parseRequest(payload);
      const tx = "request" in parsed ? transactionOf(parsed.request) : undefined;
      void this.respond(name, tx, {
        error: `busy: ${this.pending} commands already queued; try again later`,
      });
      return;
    }
    this.pending += 1;
    this.queue = this.queue
      .then(() => this.handle(name, payload))
      .catch((err: unknown) => this.logger.error({ command: name, err }, "command handling failed"))
      .finally(() => {
        this.pending -= 1;
      });
  }

  private async handle(name: string, payload: Buffer): Promise<void> {
    const parsed = parseRequest(payload);
    if ("error" in parsed) {
      await this.respond(name, undefined, parsed);
      return;
    }
    const tx = transactionOf(parsed.request);
    if (!isCommandName(name)) {
      await this.respond(name, tx, {
        error: `unknown command ${JSON.stringify(name)} (known: ${COMMAND_NAMES.join(", ")})`,
      });
      return;
    }
    const validate = validatorOf(name);
    if (!validate(parsed.request)) {
      const problems = describeSchemaErrors(validate.errors ?? [], parsed.request);
      await this.respond(name, tx, { error: `invalid ${name} request: ${problems}` });
      return;
    }
    await this.respond(name, tx, await this.run(name, parsed.request));
  }

  private async run(name: CommandName, request: Record<string, unknown>): Promise<Outcome> {
    try {
      // the validator above checked `request` against this command's schema, which is what Request<N> says
      const runner = runners[name] as Runner<CommandName>;
      return await runner(this.control, request as Request<CommandName>);
    } catch (err) {
      if (err instanceof ControlError) return { error: err.message };
      this.logger.error({ command: name, err }, "command failed");
      return { error: `internal error: ${errorMessage(err)}` };
    }
  }

  private async respond(name: string, tx: string | number | undefined, outcome: Outcome): Promise<void> {
    const response: CommandResponsePayload =
      "error" in outcome
        ? { ...(tx !== undefined ? { transaction: tx } : {}), status: "error", ...outcome }
        : { ...(tx !== undefined ? { transaction: tx } : {}), status: "ok", data: outcome.data };
    // the control logs every change with who asked, old and new value; an HMI polling `status` would flood info
    const level = "error" in outcome ? "warn" : "debug";
    this.logger[level](
      { command: name, transaction: tx, ...("error" in outcome ? { error: outcome.error } : {}) },
      `MQTT command ${response.status}`,
    );
    const sent = await this.session.publishMessage(
      this.topics.commandResponse(name),
      Buffer.from(JSON.stringify(response), "utf8"),
      1,
    );
    if (!sent) this.logger.warn({ command: name, transaction: tx }, "command response not sent (offline)");
  }
}
