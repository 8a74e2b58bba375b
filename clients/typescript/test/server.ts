// Real stockraft servers for the tests, started from $STOCKRAFT_BIN.
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../src/gen/health/v1/health";

const START_TIMEOUT_MS = 30_000;

export function binary(): string {
  const bin = process.env.STOCKRAFT_BIN;
  if (!bin || !fs.existsSync(bin)) {
    throw new Error(`STOCKRAFT_BIN must name the stockraft binary (got ${JSON.stringify(bin)}); build it with \`cargo build --bin stockraft\``);
  }
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** The health status `address` reports for `service`, or undefined when it
 * does not answer (down, or a service name it does not know). */
export function health(address: string, service = "", timeoutMs = 1000): Promise<number | undefined> {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.check({ service }, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (error, answer) => {
      client.close();
      resolve(error ? undefined : answer.status);
    });
  });
}

export class Server {
  readonly address: string;
  private process?: ChildProcess;
  readonly logPath: string;

  constructor(readonly port: number, readonly workdir: string, readonly extra: string[] = []) {
    this.address = `127.0.0.1:${port}`;
    this.logPath = path.join(workdir, `server-${port}.log`);
  }

  static async start(extra: string[] = []): Promise<Server> {
    const workdir = fs.mkdtempSync(path.join(os.tmpdir(), "stockraft-ts-"));
    const server = new Server(await freePort(), workdir, extra);
    server.spawn();
    await server.waitServing();
    return server;
  }

  /** `n` members of a new cluster on loopback, each SERVING. */
  static async cluster(n = 3): Promise<Server[]> {
    const workdir = fs.mkdtempSync(path.join(os.tmpdir(), "stockraft-ts-cluster-"));
    const ports: number[] = [];
    for (let i = 0; i < n; i++) ports.push(await freePort());
    const peers = ports.map((p, i) => `${i + 1}=127.0.0.1:${p}`).join(",");
    const members = ports.map((p, i) => new Server(p, workdir, ["--peers", peers, "--member-id", String(i + 1)]));
    members.forEach((m) => m.spawn());
    await Promise.all(members.map((m) => m.waitServing()));
    return members;
  }

  get alive(): boolean {
    return this.process !== undefined && this.process.exitCode === null && this.process.signalCode === null;
  }

  spawn(): void {
    const log = fs.openSync(this.logPath, "a");
    this.process = spawn(binary(), ["serve", "--listen", this.address, "--data-dir", path.join(this.workdir, `data-${this.port}`),
      "--metrics-listen", "off", ...this.extra], { stdio: ["ignore", log, log] });
  }

  async waitServing(timeoutMs = START_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.process?.exitCode !== null) throw new Error(`stockraft exited with ${this.process?.exitCode}:\n${this.logTail()}`);
      if ((await health(this.address, "", 500)) === HealthCheckResponse_ServingStatus.SERVING) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`stockraft at ${this.address} not SERVING after ${timeoutMs} ms:\n${this.logTail()}`);
  }

  logTail(lines = 30): string {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  kill(): Promise<void> {
    return this.signal("SIGKILL");
  }

  /** Stops the server and removes its data and log (and the folder, once
   * the last member sharing it has gone). */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
    fs.rmSync(path.join(this.workdir, `data-${this.port}`), { recursive: true, force: true });
    fs.rmSync(this.logPath, { force: true });
    try {
      fs.rmdirSync(this.workdir);
    } catch {
      // Another member's files are still there.
    }
  }

  private signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
      child.once("exit", () => {
        clearTimeout(force);
        resolve();
      });
      child.kill(signal);
    });
  }
}

/** A fresh name per test, so tests share a server but not its stock. */
export function uniqueNames(): (prefix: string) => string {
  const tag = randomUUID().slice(0, 10);
  return (prefix) => `${prefix}-${tag}`;
}
