#!/usr/bin/env node
import { spawn } from "node:child_process";

// Each camera keeps up to two libuv worker threads blocked inside gstreamer-superficial (bus wait, frame wait);
// with libuv's default pool of 4, two cameras starve file I/O, sharp and the outbox. libuv sizes its pool on
// first use, which Node's module loader makes before any of our code runs, so the size can only come from the
// environment at process start: when it is missing, run ourselves again with it set. (The systemd unit sets it,
// so the daemon under systemd is never re-executed.)
const POOL_SIZE = "32";

if (process.env.UV_THREADPOOL_SIZE) {
  await import("./cli.js");
} else {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, UV_THREADPOOL_SIZE: POOL_SIZE },
  });
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(signal, () => child.kill(signal));
  }
  child.on("exit", (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
