import { writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { OPCUACertificateManager } from "node-opcua-certificate-manager";
import {
  type ClientSession,
  DataType,
  MessageSecurityMode,
  OPCUAClient,
  SecurityPolicy,
  type StatusCode,
  UserTokenType,
} from "node-opcua-client";
import type { OpcuaConfig, PartialConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/core/log.js";
import { OPCUA_NAMESPACE_URI, OpcuaInterface } from "../../src/publish/opcua/opcua.js";
import { testConfig } from "./config.js";
import { TestLineControl } from "./line-control.js";
import { tempDir } from "./tiny-data.js";

export const PLC_USER = "plc";
export const PLC_PASSWORD = "s3cret-plc";

/** A port free on loopback right now (the OS picks it; the server binds it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

export interface TestServer {
  dir: string;
  config: OpcuaConfig;
  control: TestLineControl;
  server: OpcuaInterface;
  endpoint: string;
  stop(): Promise<void>;
}

/** An OpcuaInterface on loopback over a TestLineControl, one user `plc` with its password in a file. */
export async function startTestServer(
  opcua: PartialConfig["opcua"] = {},
  cameras = ["cam1", "cam2"],
): Promise<TestServer> {
  const dir = await tempDir("stpmd-opcua-");
  const passwordFile = path.join(dir, "plc_password");
  await writeFile(passwordFile, `${PLC_PASSWORD}\n`);
  const port = await freePort();
  const config = testConfig({
    opcua: {
      enabled: true,
      port,
      bind: "127.0.0.1",
      hostname: "localhost",
      users: [{ username: PLC_USER, password_file: passwordFile }],
      pki_dir: path.join(dir, "pki"),
      ...opcua,
    },
  }).opcua;
  const control = new TestLineControl(cameras);
  const server = new OpcuaInterface(config, control, createLogger("silent"));
  control.interfaces.push(server);
  await server.start();
  return {
    dir,
    config,
    control,
    server,
    endpoint: `opc.tcp://localhost:${port}`,
    stop: () => server.stop(),
  };
}

export interface ConnectOptions {
  user?: string;
  password?: string;
  anonymous?: boolean;
  secure?: boolean;
  /** Client certificate store (default: a fresh one in the server's temp dir). */
  pkiDir?: string;
}

/** A real node-opcua client session, as a PLC would open it. */
export class Plc {
  private constructor(
    readonly client: OPCUAClient,
    readonly session: ClientSession,
    readonly ns: number,
  ) {}

  static async connect(
    server: Pick<TestServer, "dir" | "endpoint">,
    options: ConnectOptions = {},
  ): Promise<Plc> {
    const pkiDir = options.pkiDir ?? path.join(server.dir, "client-pki");
    const clientCertificateManager = new OPCUACertificateManager({
      rootFolder: pkiDir,
      automaticallyAcceptUnknownCertificate: true,
    });
    const client = OPCUAClient.create({
      applicationName: "stpmd-test-plc",
      endpointMustExist: false,
      securityMode: options.secure ? MessageSecurityMode.SignAndEncrypt : MessageSecurityMode.None,
      securityPolicy: options.secure ? SecurityPolicy.Basic256Sha256 : SecurityPolicy.None,
      connectionStrategy: { maxRetry: 0, initialDelay: 50, maxDelay: 100 },
      clientCertificateManager,
    });
    await client.connect(server.endpoint);
    try {
      const session = await client.createSession(
        options.anonymous
          ? { type: UserTokenType.Anonymous }
          : {
              type: UserTokenType.UserName,
              userName: options.user ?? PLC_USER,
              password: options.password ?? PLC_PASSWORD,
            },
      );
      const namespaces = await session.readNamespaceArray();
      const ns = namespaces.indexOf(OPCUA_NAMESPACE_URI);
      if (ns < 0) throw new Error(`namespace ${OPCUA_NAMESPACE_URI} missing: ${namespaces.join(", ")}`);
      return new Plc(client, session, ns);
    } catch (err) {
      await client.disconnect();
      throw err;
    }
  }

  nodeId(name: string): string {
    return `ns=${this.ns};s=stpmd.${name}`;
  }

  async read(name: string): Promise<unknown> {
    const dataValue = await this.session.read({ nodeId: this.nodeId(name) });
    if (!dataValue.statusCode.isGood()) throw new Error(`read ${name}: ${dataValue.statusCode.toString()}`);
    return dataValue.value.value;
  }

  async write(name: string, dataType: DataType, value: unknown): Promise<StatusCode> {
    return this.session.write({
      nodeId: this.nodeId(name),
      attributeId: 13,
      value: { value: { dataType, value } },
    });
  }

  /** PartId, then the trigger's rising and falling edge, as a PLC program does. */
  async trigger(camera: string, partId: string): Promise<StatusCode> {
    const id = await this.write(`${camera}.PartId`, DataType.String, partId);
    if (!id.isGood()) throw new Error(`write PartId: ${id.toString()}`);
    const status = await this.write(`${camera}.Trigger`, DataType.Boolean, true);
    const low = await this.write(`${camera}.Trigger`, DataType.Boolean, false);
    if (!low.isGood()) throw new Error(`lower Trigger: ${low.toString()}`);
    return status;
  }

  async call(method: string, args: { dataType: DataType; value: unknown }[]) {
    return this.session.call({
      objectId: `ns=${this.ns};s=stpmd`,
      methodId: this.nodeId(method),
      inputArguments: args,
    });
  }

  /**
   * The PLC's side of the result handshake, once: waits for ResultsReady, reads the result, waits `ackDelayMs`
   * (a slow PLC), raises ResultsAck, checks ResultsReady fell, and lowers ResultsAck.
   */
  async takeResult(camera: string, ackDelayMs = 0, timeoutMs = 5000): Promise<PlcResult> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.read(`${camera}.ResultsReady`)) !== true) {
      if (Date.now() > deadline) throw new Error(`no ResultsReady on ${camera} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const names = ["ResultPartId", "ResultOK", "ResultNG", "Score", "Threshold", "Regions", "EventId"];
    const more = ["ResultCounter", "Error", "ErrorCode", "ResultRecipe"];
    const values = await this.session.read(
      [...names, ...more].map((n) => ({ nodeId: this.nodeId(`${camera}.${n}`) })),
    );
    const v = values.map((dv) => dv.value.value as unknown);
    if (ackDelayMs > 0) await new Promise((r) => setTimeout(r, ackDelayMs));
    const ack = await this.write(`${camera}.ResultsAck`, DataType.Boolean, true);
    if (!ack.isGood()) throw new Error(`ResultsAck: ${ack.toString()}`);
    if ((await this.read(`${camera}.ResultsReady`)) !== false)
      throw new Error("ResultsReady did not fall on ack");
    const low = await this.write(`${camera}.ResultsAck`, DataType.Boolean, false);
    if (!low.isGood()) throw new Error(`lower ResultsAck: ${low.toString()}`);
    return {
      partId: v[0] as string,
      ok: v[1] as boolean,
      ng: v[2] as boolean,
      score: v[3] as number,
      threshold: v[4] as number,
      regions: v[5] as number,
      eventId: v[6] as string,
      counter: v[7] as number,
      error: v[8] as boolean,
      errorCode: v[9] as number,
      recipe: v[10] as string,
    };
  }

  /**
   * The PLC's side of the recipe handshake: writes the name to RecipeRequest, waits for RecipeDone, reads the
   * answer, raises RecipeAck (RecipeDone falls) and lowers it again.
   */
  async selectRecipe(name: string, timeoutMs = 30_000): Promise<{ error: boolean; message: string }> {
    const request = await this.write("RecipeRequest", DataType.String, name);
    if (!request.isGood()) throw new Error(`write RecipeRequest: ${request.toString()}`);
    const deadline = Date.now() + timeoutMs;
    while ((await this.read("RecipeDone")) !== true) {
      if (Date.now() > deadline) throw new Error(`no RecipeDone within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const answer = {
      error: (await this.read("RecipeError")) as boolean,
      message: (await this.read("RecipeMessage")) as string,
    };
    const ack = await this.write("RecipeAck", DataType.Boolean, true);
    if (!ack.isGood()) throw new Error(`RecipeAck: ${ack.toString()}`);
    if ((await this.read("RecipeDone")) !== false) throw new Error("RecipeDone did not fall on ack");
    const low = await this.write("RecipeAck", DataType.Boolean, false);
    if (!low.isGood()) throw new Error(`lower RecipeAck: ${low.toString()}`);
    return answer;
  }

  async close(): Promise<void> {
    await this.session.close();
    await this.client.disconnect();
  }
}

export interface PlcResult {
  partId: string;
  ok: boolean;
  ng: boolean;
  score: number;
  threshold: number;
  regions: number;
  eventId: string;
  counter: number;
  error: boolean;
  errorCode: number;
  /** The recipe the answer was judged under (ResultRecipe); empty: none. */
  recipe: string;
}
