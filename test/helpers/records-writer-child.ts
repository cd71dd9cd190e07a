/**
 * A process writing the part record as fast as it can, for the SIGKILL test: batches of 50 rows through the
 * unmodified RecordWriter into argv[2], a line `committed <rows>` on stdout after each write returned (the
 * transaction committed). The test kills it with SIGKILL at a moment of its choosing, mid-batch most likely.
 */
import { RecordWriter } from "../../src/publish/records/record-writer.js";
import { recordJob, writerOptionsFor } from "./records.js";

// `npm test` runs every file under dist/test/ as a test file, this one too: without a folder to write it does nothing
if (process.argv[2] === undefined) process.exit(0);

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const writer = new RecordWriter(writerOptionsFor(process.argv[2]), quiet);
let seq = 0;
for (;;) {
  const jobs = Array.from({ length: 50 }, (_, i) =>
    recordJob(seq + i, { verdict: (seq + i) % 10 === 0 ? "defect" : "ok", image: (seq + i) % 10 === 0 }),
  );
  await writer.write(jobs);
  seq += jobs.length;
  process.stdout.write(`committed ${seq}\n`);
}
