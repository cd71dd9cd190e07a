#!/usr/bin/env node
// The stpmd binary. CommonJS, so that `bin` works with the extension npm links; the CLI itself is an ES module.
// `stpmd run` holds its signals before the CLI's modules load (about 0.5 s, during which a SIGHUP or SIGTERM
// would otherwise end the process); the daemon handles them once it exists (daemon/signals.ts).
const loaded =
  process.argv[2] === "run"
    ? import("./daemon/signals.js").then((signals) => signals.holdSignals())
    : Promise.resolve();
loaded.then(() => import("./commands/cli.js"));
