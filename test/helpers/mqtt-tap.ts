import { once } from "node:events";
import net from "node:net";
import { type Packet, parser } from "mqtt-packet";

/** One MQTT packet that crossed the tap, or a connection opening or closing. */
export type TapEvent =
  | { kind: "packet"; conn: number; dir: "up" | "down"; at: number; packet: Packet }
  | { kind: "open" | "close"; conn: number; at: number };

/**
 * A TCP relay in front of a broker that decodes every MQTT packet in both directions (`up`: client to broker,
 * `down`: broker to client), so a test sees what a client really put on the wire: the CONNECT's clean-session flag
 * and will, each PUBLISH's QoS and retain flag, SUBSCRIBE QoS, and where a DISCONNECT came — which no subscriber
 * can see (a broker forwards with the subscription's QoS and, under MQTT 3.1.1, without the retain flag).
 */
export class MqttTap {
  readonly port: number;
  readonly events: TapEvent[] = [];
  private readonly server: net.Server;
  private readonly targetPort: number;
  private readonly sockets = new Set<net.Socket>();
  private connections = 0;

  private constructor(server: net.Server, port: number, targetPort: number) {
    this.server = server;
    this.port = port;
    this.targetPort = targetPort;
    server.on("connection", (socket) => this.relay(socket));
  }

  static async start(targetPort: number): Promise<MqttTap> {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const address = server.address();
    if (typeof address !== "object" || address === null) throw new Error("MqttTap: no address");
    return new MqttTap(server, address.port, targetPort);
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** The packets of one direction, in order. */
  packets(dir: "up" | "down"): Extract<TapEvent, { kind: "packet" }>[] {
    return this.events.filter(
      (e): e is Extract<TapEvent, { kind: "packet" }> => e.kind === "packet" && e.dir === dir,
    );
  }

  /** Cuts every relayed connection without a DISCONNECT (the broker then publishes the client's will). */
  cut(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async shutdown(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: net.Socket): void {
    const conn = ++this.connections;
    this.events.push({ kind: "open", conn, at: Date.now() });
    const upstream = net.connect({ port: this.targetPort, host: "127.0.0.1" });
    this.sockets.add(client);
    this.sockets.add(upstream);
    let closed = false;
    const teardown = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      if (!closed) this.events.push({ kind: "close", conn, at: Date.now() });
      closed = true;
    };
    client.on("error", teardown);
    upstream.on("error", teardown);
    client.on("close", teardown);
    upstream.on("close", teardown);
    const up = parser({ protocolVersion: 4 });
    // the broker's packets parse with the version the client's CONNECT asked for
    let down = parser({ protocolVersion: 4 });
    up.on("packet", (packet: Packet) => {
      if (packet.cmd === "connect")
        down = this.watch(parser({ protocolVersion: packet.protocolVersion }), conn, "down");
      this.events.push({ kind: "packet", conn, dir: "up", at: Date.now(), packet });
    });
    this.watch(down, conn, "down");
    client.on("data", (chunk: Buffer) => {
      up.parse(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      down.parse(chunk);
      client.write(chunk);
    });
  }

  private watch(p: ReturnType<typeof parser>, conn: number, dir: "down"): ReturnType<typeof parser> {
    p.on("packet", (packet: Packet) =>
      this.events.push({ kind: "packet", conn, dir, at: Date.now(), packet }),
    );
    return p;
  }
}
