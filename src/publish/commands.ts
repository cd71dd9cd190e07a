/**
 * The operator's commands ({@link CommandExecutor}), shared by the MQTT sink's `<prefix>/command/<name>` (see
 * `mqtt/commands.ts`) and the console's `POST /api/command/<name>`: every
 * request is validated against its schema before anything is called, so bad JSON, an unknown command or a wrong
 * type is answered with an error and changes nothing; requests from both interfaces run one at a time, in arrival
 * order, so responses come in the order the requests did and a reload never interleaves with a threshold change.
 * */
import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { THRESHOLD_RULE_TEXT, type ThresholdRule, thresholdRuleSchema } from "../config/index.js";
import { formatKeyPath, type Problem, quoteValue } from "../config/problems.js";
import { schemaProblems } from "../config/validate.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { ControlError, type LineControl, type Requester } from "./control.js";
import type { CommandResponsePayload } from "./topics.js";

/** A request larger than this is refused unparsed: no command needs more than a few hundred bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Requests waiting behind a running one (a reload can take seconds); beyond this they are refused as busy. */
export const MAX_PENDING_COMMANDS = 32;

/** Longest transaction echoed: a longer one is refused, and not echoed (a response never carries 64 KiB back). */
const MAX_TRANSACTION_LENGTH = 256;
const transaction = Type.Optional(
  Type.Union([Type.String({ maxLength: MAX_TRANSACTION_LENGTH }), Type.Number()], {
    description: "Echoed in the response, so a client can match it to its request.",
    expected: `a string of at most ${MAX_TRANSACTION_LENGTH} characters or a number`,
  }),
);
const camera = Type.String({ description: "Camera id.", minLength: 1 });

/** A request that names only a camera (and the optional transaction); `example` is its example's transaction. */
function cameraRequest(example: string) {
  return Type.Object(
    { transaction, camera },
    { additionalProperties: false, examples: [{ transaction: example, camera: "cam1" }] },
  );
}

/**
 * The payload of each command; `additionalProperties: false` so a misspelt key is an error, not a no-op. Each
 * one's first `examples` entry is quoted in the refusal of a request that does not fit, as what to send.
 */
const requestSchemas = {
  reload: Type.Object({ transaction }, { additionalProperties: false, examples: [{ transaction: "r-1" }] }),
  status: Type.Object({ transaction }, { additionalProperties: false, examples: [{ transaction: "s-1" }] }),
  set_threshold: Type.Object(
    {
      transaction,
      camera,
      threshold: Type.Union(
        [Type.Number({ exclusiveMinimum: 0 }), thresholdRuleSchema(`${THRESHOLD_RULE_TEXT}.`)],
        { description: "The camera's new threshold rule.", expected: `a number > 0, ${THRESHOLD_RULE_TEXT}` },
      ),
    },
    {
      additionalProperties: false,
      examples: [{ transaction: "t-1", camera: "cam1", threshold: 0.7 }],
    },
  ),
  enable_camera: Type.Object(
    { transaction, camera, enabled: Type.Boolean() },
    { additionalProperties: false, examples: [{ transaction: "e-1", camera: "cam1", enabled: false }] },
  ),
  collection: Type.Object(
    { transaction, enabled: Type.Boolean() },
    { additionalProperties: false, examples: [{ transaction: "c-1", enabled: true }] },
  ),
  select_recipe: Type.Object(
    {
      transaction,
      recipe: Type.Union([Type.String({ minLength: 1 }), Type.Null()], {
        description: "The recipe's name, or null for every camera's own settings.",
        expected: "a recipe's name or null (every camera's own settings)",
      }),
    },
    { additionalProperties: false, examples: [{ transaction: "r-1", recipe: "bottle-b" }] },
  ),
  // candidate models (issue 22, docs/candidates.md): each names the camera whose candidate it acts on
  retrain: cameraRequest("j-1"),
  cancel_retrain: cameraRequest("j-2"),
  shadow: Type.Object(
    { transaction, camera, enabled: Type.Boolean() },
    { additionalProperties: false, examples: [{ transaction: "s-1", camera: "cam1", enabled: true }] },
  ),
  promote: Type.Object(
    {
      transaction,
      camera,
      force: Type.Optional(
        Type.Boolean({
          description: "Promote although an enforced promotion gate fails (audited as forced).",
        }),
      ),
    },
    { additionalProperties: false, examples: [{ transaction: "p-1", camera: "cam1" }] },
  ),
  rollback: cameraRequest("b-1"),
  discard_candidate: cameraRequest("d-1"),
} satisfies Record<string, TSchema>;

type CommandName = keyof typeof requestSchemas;
type Request<N extends CommandName> = Static<(typeof requestSchemas)[N]>;

/** What a command answers: data for an `ok`, or a refusal with an error (and, for reload, what happened). */
type Outcome = { data: unknown } | { error: string; data?: unknown };

type Runner<N extends CommandName> = (
  control: LineControl,
  request: Request<N>,
  by: Requester,
) => Outcome | Promise<Outcome>;

const runners: { [N in CommandName]: Runner<N> } = {
  reload: async (control, _request, by) => {
    const outcome = await control.reload(by);
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
  set_threshold: (control, request, by) => {
    const rule: ThresholdRule =
      typeof request.threshold === "number" ? { value: request.threshold } : request.threshold;
    const change = control.setThreshold(request.camera, rule, by);
    return { data: { camera: request.camera, threshold_rule: rule, old: change.old, new: change.new } };
  },
  enable_camera: async (control, request, by) => {
    await control.enableCamera(request.camera, request.enabled, by);
    return { data: { camera: request.camera, enabled: request.enabled } };
  },
  collection: (control, request, by) => {
    control.setCollection(request.enabled, by);
    return { data: { enabled: request.enabled } };
  },
  select_recipe: async (control, request, by) => {
    const change = await control.selectRecipe(request.recipe, by);
    return { data: { old: change.old, new: change.new } };
  },
  retrain: async (control, request, by) => ({ data: await control.startRetrain(request.camera, by) }),
  cancel_retrain: async (control, request, by) => ({ data: await control.cancelRetrain(request.camera, by) }),
  shadow: async (control, request, by) => ({
    data: { camera: request.camera, shadow: await control.setShadow(request.camera, request.enabled, by) },
  }),
  promote: async (control, request, by) => ({
    data: await control.promote(request.camera, by, request.force === true),
  }),
  rollback: async (control, request, by) => ({ data: await control.rollback(request.camera, by) }),
  discard_candidate: async (control, request, by) => ({
    data: await control.discardCandidate(request.camera, by),
  }),
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
    ajv.addVocabulary(["expected"]); // an annotation for error messages, not a constraint
    validators = new Map(COMMAND_NAMES.map((n) => [n, ajv.compile(requestSchemas[n])]));
  }
  return validators.get(name)!;
}

/**
 * One line naming every problem of a payload that failed its schema, each with its key (`camera: must not be
 * empty; enable: unknown key (did you mean enabled?)`): the config file's wording, from the same code.
 */
export function describeSchemaErrors(errors: readonly ErrorObject[], payload: unknown): string {
  return schemaProblems(errors, payload)
    .map((problem: Problem) => `${formatKeyPath(problem.path, payload)}: ${problem.message}`)
    .join("; ");
}

/** `; send e.g. {…}` with the command's example request, or nothing for a command without one. */
function sendExample(name: string): string {
  const examples = isCommandName(name)
    ? (requestSchemas[name] as { examples?: unknown[] }).examples
    : undefined;
  return examples?.[0] === undefined ? "" : `; send e.g. ${JSON.stringify(examples[0])}`;
}

type Parsed = { request: Record<string, unknown> } | { error: string };

/**
 * The request object of a payload; an empty payload (`mosquitto_pub -n`) is `{}`, for commands without keys. A
 * refusal says what to send instead (`name`'s example request).
 */
function parseRequest(name: string, payload: Buffer): Parsed {
  if (payload.length > MAX_REQUEST_BYTES) {
    return {
      error: `the request is ${payload.length} bytes, more than the ${MAX_REQUEST_BYTES} a command takes${sendExample(name)}`,
    };
  }
  const text = payload.toString("utf8").trim();
  if (text === "") return { request: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // JSON.parse's own words say where the text broke off ("Unexpected end of JSON input")
    return { error: `the request is not valid JSON (${errorMessage(err)})${sendExample(name)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return {
      error: `the request must be a JSON object with the command's keys (got ${quoteValue(value, [])})${sendExample(name)}`,
    };
  }
  return { request: value as Record<string, unknown> };
}

/** The request's transaction if it is one a response can echo, else undefined. */
function transactionOf(request: Record<string, unknown>): string | number | undefined {
  const value = request.transaction;
  return (typeof value === "string" && value.length <= MAX_TRANSACTION_LENGTH) ||
    (typeof value === "number" && Number.isFinite(value))
    ? value
    : undefined;
}

function responseOf(tx: string | number | undefined, outcome: Outcome): CommandResponsePayload {
  const echo = tx !== undefined ? { transaction: tx } : {};
  return "error" in outcome
    ? { ...echo, status: "error", ...outcome }
    : { ...echo, status: "ok", data: outcome.data };
}

/**
 * Runs commands for every interface that takes them (MQTT, the console): parses and validates a request, runs it
 * against the control, and answers a response. Requests run one at a time in arrival order; beyond
 * {@link MAX_PENDING_COMMANDS} waiting they are answered busy at once.
 */
export class CommandExecutor {
  private readonly logger: Logger;
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(
    private readonly control: LineControl,
    logger: Logger,
  ) {
    this.logger = logger.child({ component: "commands" });
  }

  /** Runs one request (the raw payload: JSON, or empty for `{}`) and resolves with its response; never rejects. */
  execute(name: string, payload: Buffer, by: Requester): Promise<CommandResponsePayload> {
    if (this.pending >= MAX_PENDING_COMMANDS) {
      const parsed = parseRequest(name, payload);
      const tx = "request" in parsed ? transactionOf(parsed.request) : undefined;
      return Promise.resolve(
        this.answer(name, tx, by, {
          error: `busy: ${this.pending} commands already queued; try again later`,
        }),
      );
    }
    this.pending += 1;
    const response = this.queue.then(() => this.handle(name, payload, by));
    this.queue = response.then(
      () => undefined,
      () => undefined,
    );
    return response
      .catch((err: unknown): CommandResponsePayload => {
        this.logger.error({ command: name, err }, "command handling failed");
        return responseOf(undefined, { error: `internal error: ${errorMessage(err)}` });
      })
      .finally(() => {
        this.pending -= 1;
      });
  }

  /** Resolves once every request taken so far has been answered. */
  idle(): Promise<void> {
    return this.queue;
  }

  private async handle(name: string, payload: Buffer, by: Requester): Promise<CommandResponsePayload> {
    const parsed = parseRequest(name, payload);
    if ("error" in parsed) return this.answer(name, undefined, by, parsed);
    const tx = transactionOf(parsed.request);
    if (!isCommandName(name)) {
      return this.answer(name, tx, by, {
        error: `there is no command ${JSON.stringify(name)}; the commands are ${COMMAND_NAMES.join(", ")}`,
      });
    }
    const validate = validatorOf(name);
    if (!validate(parsed.request)) {
      const problems = describeSchemaErrors(validate.errors ?? [], parsed.request);
      return this.answer(name, tx, by, { error: `${name} refused: ${problems}${sendExample(name)}` });
    }
    return this.answer(name, tx, by, await this.run(name, parsed.request, by));
  }

  private async run(name: CommandName, request: Record<string, unknown>, by: Requester): Promise<Outcome> {
    try {
      // the validator above checked `request` against this command's schema, which is what Request<N> says
      const runner = runners[name] as Runner<CommandName>;
      return await runner(this.control, request as Request<CommandName>, by);
    } catch (err) {
      if (err instanceof ControlError) return { error: err.message };
      this.logger.error({ command: name, err }, "command failed");
      return { error: `internal error: ${errorMessage(err)}` };
    }
  }

  private answer(
    name: string,
    tx: string | number | undefined,
    by: Requester,
    outcome: Outcome,
  ): CommandResponsePayload {
    const response = responseOf(tx, outcome);
    // the control logs every change with who asked, old and new value; an HMI polling `status` would flood info
    const level = "error" in outcome ? "warn" : "debug";
    this.logger[level](
      {
        command: name,
        via: by.via,
        ...(by.user !== undefined ? { user: by.user } : {}),
        transaction: tx,
        ...("error" in outcome ? { error: outcome.error } : {}),
      },
      `command ${response.status}`,
    );
    return response;
  }
}
