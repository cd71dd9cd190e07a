/**
 * The records thread: a {@link RecordWriter} behind messages. The daemon's side sends what gathered in 200 ms as one
 * message (record-thread.ts, GATHER_MS): one drain, one transaction. Jobs that arrive while a write runs are written
 * together in the next one, so a slow disk costs fewer commits, not more.
 */
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import {
  type RecordJob,
  RecordWriter,
  type WriterLog,
  type WriterOptions,
  type WriterStats,
} from "./record-writer.js";

export type ToWorker = { type: "write"; jobs: RecordJob[] } | { type: "stop" };

export type FromWorker =
  | { type: "written"; rows: number; stats: WriterStats; problem: string | undefined; open: boolean }
  | { type: "log"; level: "info" | "warn" | "error"; fields: Record<string, unknown>; msg: string }
  | { type: "stopped" };

const port = parentPort!;
const post = (msg: FromWorker): void => port.postMessage(msg);

/** Log lines go to the daemon's logger, which knows the level, the format and the component. */
function forward(level: "info" | "warn" | "error") {
  return (fields: object, msg: string): void => {
    const plain: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(fields)) {
      plain[key] =
        value instanceof Error
          ? { type: value.name, message: value.message, ...("code" in value ? { code: value.code } : {}) }
          : value;
    }
    post({ type: "log", level, fields: plain, msg });
  };
}
const log: WriterLog = { info: forward("info"), warn: forward("warn"), error: forward("error") };

const writer = new RecordWriter(workerData as WriterOptions, log);
let isOpen = writer.open();
if (isOpen)
  await writer
    .retain()
    .catch((err: unknown) => log.warn({ err }, `records retention at start failed: ${errorMessage(err)}`));
let queue: RecordJob[] = [];
let writing = false;
let stopping = false;

async function drain(): Promise<void> {
  if (writing) return;
  writing = true;
  while (queue.length > 0) {
    const jobs = queue;
    queue = [];
    try {
      await writer.write(jobs);
    } catch (err) {
      // write() handles the disk's failures itself; anything else must not stop the thread from draining
      log.error({ err }, `records thread: a write failed unexpectedly: ${errorMessage(err)}`);
    }
    isOpen = writer.problem === undefined;
    post({
      type: "written",
      rows: jobs.length,
      stats: { ...writer.stats },
      problem: writer.problem,
      open: isOpen,
    });
  }
  writing = false;
  if (stopping) {
    writer.close();
    post({ type: "stopped" });
  }
}

post({ type: "written", rows: 0, stats: { ...writer.stats }, problem: writer.problem, open: isOpen });
port.on("message", (msg: ToWorker) => {
  if (msg.type === "write") {
    queue.push(...msg.jobs);
  } else {
    stopping = true;
  }
  void drain();
});
