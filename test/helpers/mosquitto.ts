import { once } from "node:events";
import net from "node:net";

export { freeLoopbackPort, MOSQUITTO_BIN, MosquittoBroker } from "../../src/demo/broker.js";

/**
 * A TCP relay in front of a broker that a test can close and reopen, to decide *when* a client may reach the
 * broker (e.g. let a subscriber in first after a broker restart). Closing it also cuts the relayed connections.
 */
export class TcpGate {
  readonly port: number;
  private readonly server: net.Server;
  private readonly targetPort: number;
  private isOpen = true;
  private readonly sockets = new Set<net.Socket>();

  private constructor(server: net.Server, port: number, targetPort: number) {
    this.server = server;
    this.port = port;
    this.targetPort = targetPort;
    server.on("connection", (socket) => this.relay(socket));
  }

  static async start(targetPort: number): Promise<TcpGate> {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const address = server.address();
    if (typeof address !== "object" || address === null) throw new Error("TcpGate: no address");
    return new TcpGate(server, address.port, targetPort);
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Refuses (resets) new connections and cuts the open ones. */
  close(): void {
    this.isOpen = false;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  open(): void {
    this.isOpen = true;
  }

  async shutdown(): Promise<void> {
    this.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: net.Socket): void {
    if (!this.isOpen) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ port: this.targetPort, host: "127.0.0.1" });
    this.sockets.add(client);
    this.sockets.add(upstream);
    const teardown = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("error", teardown);
    upstream.on("error", teardown);
    client.on("close", teardown);
    upstream.on("close", teardown);
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
