// Where the servers are and how to open a connection to one.
//
// Every client gets clients/service_config.json (copied into src/gen/ at
// generate time), so grpc-js itself retries UNAVAILABLE and
// RESOURCE_EXHAUSTED with backoff, honours the server's
// `grpc-retry-pushback-ms` trailer and gives each call a 5 s deadline. That
// is safe because every mutation carries the caller's id and is applied at
// most once.
import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import serviceConfig from "./gen/service_config.json";

// The same variables the `stockraft` CLI reads.
export const ENV_SERVER = "STOCKRAFT_SERVER";
export const ENV_TOKEN = "STOCKRAFT_TOKEN";
export const ENV_TLS_CA = "STOCKRAFT_TLS_CA";
export const DEFAULT_SERVER = "127.0.0.1:50051";
/** The method config's timeout, also used for streamed operations. */
export const DEFAULT_TIMEOUT_MS = 5000;

/** HOST:PORT addresses from a list, a comma-separated string, or
 * STOCKRAFT_SERVER, in that order of preference. */
export function resolveAddresses(value?: string[] | string): string[] {
  const raw = value ?? process.env[ENV_SERVER] ?? DEFAULT_SERVER;
  const list = (Array.isArray(raw) ? raw : raw.split(",")).map((a) => a.trim()).filter((a) => a !== "");
  if (list.length === 0) throw new Error("no server address given");
  return list;
}

/** PEM as a Buffer, or a path to a file holding it. */
export type Pem = Buffer | string;

export interface ConnectOptions {
  /** Bearer token (default STOCKRAFT_TOKEN). */
  token?: string;
  /** CA of the servers' certificates; TLS is used when given (default STOCKRAFT_TLS_CA). */
  caCert?: Pem;
  clientCert?: Pem;
  clientKey?: Pem;
  /** TLS host name to check when it differs from the address's host. */
  serverName?: string;
}

const read = (pem?: Pem): Buffer | null =>
  pem === undefined ? null : Buffer.isBuffer(pem) ? pem : fs.readFileSync(pem);

export class ChannelSettings {
  readonly token?: string;
  private readonly options: ConnectOptions;

  constructor(options: ConnectOptions = {}) {
    this.token = options.token ?? process.env[ENV_TOKEN];
    this.options = { ...options, caCert: options.caCert ?? process.env[ENV_TLS_CA] };
  }

  /** Call metadata: the token travels on every call rather than as call
   * credentials, which grpc-js refuses on plaintext channels (a token on
   * loopback plaintext is a setup the server allows). */
  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  credentials(): grpc.ChannelCredentials {
    const ca = read(this.options.caCert);
    if (ca === null) return grpc.credentials.createInsecure();
    return grpc.credentials.createSsl(ca, read(this.options.clientKey), read(this.options.clientCert));
  }

  channelOptions(): grpc.ChannelOptions {
    const options: grpc.ChannelOptions = {
      "grpc.service_config": JSON.stringify(serviceConfig),
      "grpc.enable_retries": 1,
    };
    if (this.options.serverName) options["grpc.ssl_target_name_override"] = this.options.serverName;
    return options;
  }
}
