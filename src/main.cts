#!/usr/bin/env node
// The stpmd binary. CommonJS, so that `bin` works with the extension npm links; the CLI itself is an ES module.
import("./commands/cli.js");
