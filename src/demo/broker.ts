// A real Mosquitto broker on a loopback port, started for `stpmd demo` and for tests.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const MOSQUITTO_BIN = "/usr/sbin/mosquitto";
const START_TIMEOUT_MS = 5000;
const STOP_TIMEOUT_MS = 3000;
const PROBE_INTERVAL_MS = 20;
/** How many free ports to try when another process grabs the probed port before mosquitto binds it. */
const PORT_ATTEMPTS = 5;

export interface BrokerOptions {
  /**
   * A mosquitto password file (`mosquitto_passwd`): anonymous clients are then refused. The broker re-reads it on
   * {@link MosquittoBroker.reload}.
   */
  passwordFile?: string;
  /** Further mosquitto.conf lines for the listener (e.g. `use_username_as_clientid true`). */
  extraConfig?: string[];
}

/**
 * A real Debian mosquitto on a free loopback port, anonymous unless a password file is given, without persistence
 * (so a restart forgets retained messages and sessions, like a broker whose disk state was lost).
 */
export class MosquittoBroker {
  readonly port: number;
  private readonly dir: string;
  private readonly options: BrokerOptions;
  private process: ChildProcess | undefined;
  private log = "";

  private constructor(port: number, dir: string, options: BrokerOptions) {
    this.port = port;
    this.dir = dir;
    this.options = options;
  }

  /** Starts a broker and resolves once it accepts TCP connections. */
  static async start(options: BrokerOptions = {}): Promise<MosquittoBroker> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "stpmd-mosquitto-"));
    let lastError: unknown;
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const broker = new MosquittoBroker(await freeLoopbackPort(), dir, options);
      try {
        await broker.launch();
        return broker;
      } catch (err) {
        lastError = err;
      }
    }
    await rm(dir, { recursive: true, force: true });
    throw lastError;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.process !== undefined;
  }

  /** What mosquitto wrote to stderr/stdout, for assertion messages. */
  get output(): string {
    return this.log;
  }

  /** Stops the broker (SIGTERM, then SIGKILL after a few seconds). Connected clients see their socket close. */
  stop(): Promise<void> {
    return this.end("SIGTERM");
  }

  /** Kills the broker abruptly (SIGKILL), as a crash or power loss would: no clean disconnects. */
  kill(): Promise<void> {
    return this.end("SIGKILL");
  }

  private async end(signal: "SIGTERM" | "SIGKILL"): Promise<void> {
    const child = this.process;
    if (child === undefined) return;
    this.process = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGHUP: mosquitto re-reads its password file (and ACLs) without dropping connections. */
  reload(): void {
    this.process?.kill("SIGHUP");
  }

  /**
   * SIGSTOP (true) or SIGCONT (false): a broker that stops answering but keeps its connections open, as one on a
   * hung host or behind a dead link does. For fault tests.
   */
  freeze(frozen: boolean): void {
    this.process?.kill(frozen ? "SIGSTOP" : "SIGCONT");
  }

  /** Stops (if running) and starts a fresh broker on the same port: no retained messages, no sessions. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Stops the broker and deletes its temp directory. */
  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const configFile = path.join(this.dir, "mosquitto.conf");
    const config = [
      `listener ${this.port} 127.0.0.1`,
      ...(this.options.passwordFile
        ? ["allow_anonymous false", `password_file ${this.options.passwordFile}`]
        : ["allow_anonymous true"]),
      ...(this.options.extraConfig ?? []),
      "persistence false",
      // We run as root in CI containers; without this mosquitto would switch to the `mosquitto` user.
      `user ${os.userInfo().username}`,
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "log_type notice",
      "",
    ].join("\n");
    await writeFile(configFile, config);
    const child = spawn(MOSQUITTO_BIN, ["-c", configFile], { stdio: ["ignore", "pipe", "pipe"] });
    const collect = (chunk: Buffer): void => {
      this.log += chunk.toString("utf8");
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    this.process = child;
    try {
      await waitUntilListening(this.port, child);
    } catch (err) {
      this.process = undefined;
      child.kill("SIGKILL");
      throw new Error(`mosquitto did not start on port ${this.port}: ${(err as Error).message}\n${this.log}`);
    }
    child.once("exit", () => {
      if (this.process === child) this.process = undefined;
    });
  }
}

/** A port the kernel just handed out on 127.0.0.1 (free at the time of the call). */
export async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  server.close();
  await once(server, "close");
  return port;
}

async function waitUntilListening(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited with ${child.exitCode ?? child.signalCode}`);
    }
    if (await accepts(port)) return;
    await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
  }
  throw new Error(`no listener after ${START_TIMEOUT_MS} ms`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
