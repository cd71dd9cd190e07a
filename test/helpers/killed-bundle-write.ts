/**
 * A bundle writer killed between its two renames, as a retrain is when SIGKILLed at that moment: this process
 * writes a tiny bundle to argv[2] (model_version argv[3]) and sends itself SIGKILL right after the rename that
 * moves the old bundle aside to `<dir>.old-*`, before the new one takes its name. The kill is real; only its
 * moment is chosen, by wrapping fs/promises' rename (Node's builtin ES modules follow the CommonJS exports once
 * syncBuiltinESMExports is called), so the writer under test is the unmodified one.
 */
import { createRequire, syncBuiltinESMExports } from "node:module";

// `npm test` runs every file under dist/test/ as a test file, this one too: without a bundle to write it does nothing
if (process.argv[2] === undefined) process.exit(0);

const require = createRequire(import.meta.url);
const fsp = require("node:fs/promises") as { rename: (from: string, to: string) => Promise<void> };
const rename = fsp.rename;
fsp.rename = async (from: string, to: string) => {
  await rename(from, to);
  if (to.includes(".old-")) process.kill(process.pid, "SIGKILL");
};
syncBuiltinESMExports();

const { writeTinyBundle } = await import("./tiny-bundle.js");
await writeTinyBundle(process.argv[2]!, process.argv[3]!);
