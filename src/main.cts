#!/usr/bin/env node
// The stpmd binary. CommonJS on purpose: each camera keeps up to two libuv worker threads blocked inside
// gstreamer-superficial (bus wait, frame wait), so with libuv's default pool of 4, two cameras starve file I/O,
// sharp and the outbox. libuv sizes its pool once, on first use, from UV_THREADPOOL_SIZE. An ES module entry is
// too late to set it: Node's ESM loader reads the entry's imports through the pool before any of its code runs
// (measured: six blocked pool jobs starved an fs.stat with the size set at the top of an .mjs entry, not with it
// set here). A CommonJS entry is loaded synchronously, so setting the variable here is in time, and the daemon
// needs no second process (an earlier re-exec launcher left the real daemon orphaned when it was SIGKILLed).
// A size given by the environment (the systemd unit sets 32) is kept.
process.env.UV_THREADPOOL_SIZE ||= "32";
import("./commands/cli.js");
