// The client: `await client.reserve(...)`, carried over `Stream`.
//
// Each call is one operation, but concurrent calls share a few long-lived
// `Stream` calls per member (mux.ts), which costs the server far less than a
// unary call each. What a unary call gets from the service config is given
// to streamed operations here, so callers see the same behaviour either way:
// - a deadline per call (default 5 s): past it the call fails with
//   DEADLINE_EXCEEDED at once and its late answer is dropped;
// - retries of UNAVAILABLE and RESOURCE_EXHAUSTED with the same request (so
//   the same id): at most 5 attempts, backoff from 50 ms doubling to 2 s, or
//   the delay the server advises in RetryInfo;
// - after UNAVAILABLE, the call moves to the leader the health service names.
// Operations on one reservation id (or transaction id) run one at a time in
// call order (ordering.ts). Where a member does not carry `Stream`,
// operations go as unary calls, transparently.
import * as grpc from "@grpc/grpc-js";
import { ChannelSettings, ConnectOptions, DEFAULT_TIMEOUT_MS, resolveAddresses } from "./config";
import { Code, Reason, StockraftError, fromServiceError, localError } from "./errors";
import { ClusterClient, ClusterStatusRequest, ClusterStatusResponse } from "./gen/stockraft/v1/cluster";
import * as pb from "./gen/stockraft/v1/inventory";
import { DEFAULT_MAX_IN_FLIGHT, DEFAULT_STREAMS, StreamPool, StreamRefused } from "./mux";
import { OPERATIONS, Operation, OperationName, OperationTypes, orderKey } from "./operations";
import { KeyedOrder } from "./ordering";
import { Router } from "./routing";

// The service config's retry policy (clients/service_config.json).
const MAX_ATTEMPTS = 5;
const INITIAL_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;
const BACKOFF_MULTIPLIER = 2;

export interface ClientOptions extends ConnectOptions {
  /** Carry calls over `Stream` (default true); false sends each unary. */
  multiplex?: boolean;
  /** Streams per member. */
  streams?: number;
  /** Operations in flight per stream, at most 1,024 (the server's bound). */
  maxInFlight?: number;
}

/** Per call: `timeoutMs` defaults to the service config's 5 s. */
export interface CallOptions {
  timeoutMs?: number;
}

/** A reservation line: a message, or [sku, node, qty]. */
export type LineLike = pb.Line | [string, string, number];

type AdjustReasonLike = pb.AdjustReason | "RECEIVE" | "RETURN_RESTOCK" | "DAMAGE" | "SHRINK" | "CORRECTION";

/** How one attempt travelled, and whether it may still be applied. */
interface Attempt {
  streamed: boolean;
  settled?: Promise<void>;
  abandon?: (error: Error) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class StockraftClient {
  private readonly settings: ChannelSettings;
  private readonly router: Router;
  private readonly inventory = new Map<string, pb.InventoryClient>();
  private readonly cluster = new Map<string, ClusterClient>();
  private readonly pools = new Map<string, StreamPool>();
  private readonly order = new KeyedOrder();
  private readonly multiplex: boolean;
  /** How many answers each path carried (tests and metrics read it). */
  readonly stats = { streamed: 0, unary: 0 };

  /** `addresses`: HOST:PORT of one or more members (a list or a
   * comma-separated string); default STOCKRAFT_SERVER, else 127.0.0.1:50051. */
  constructor(addresses?: string[] | string, options: ClientOptions = {}) {
    const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (maxInFlight < 1 || maxInFlight > 1024) throw new RangeError("maxInFlight must be 1 to 1024");
    this.settings = new ChannelSettings(options);
    this.multiplex = options.multiplex ?? true;
    const credentials = this.settings.credentials();
    const list = resolveAddresses(addresses);
    const channels = new Map<string, grpc.Channel>();
    for (const address of list) {
      const channel = new grpc.Channel(address, credentials, this.settings.channelOptions());
      channels.set(address, channel);
      const inventory = new pb.InventoryClient(address, credentials, { channelOverride: channel });
      this.inventory.set(address, inventory);
      this.cluster.set(address, new ClusterClient(address, credentials, { channelOverride: channel }));
      this.pools.set(address, new StreamPool(inventory, () => this.settings.metadata(), options.streams ?? DEFAULT_STREAMS, maxInFlight));
    }
    this.router = new Router(list, channels, credentials);
  }

  close(): void {
    for (const pool of this.pools.values()) pool.close();
    // The clients of one address share its channel; closing one closes it.
    for (const client of this.inventory.values()) client.close();
    for (const client of this.cluster.values()) client.close();
    this.router.close();
  }

  /** The member calls go to now (the leader when one is known). */
  target(): Promise<string> {
    return this.router.target();
  }

  /** Operations sent on streams and not yet answered (including those whose
   * callers gave up). */
  get inFlight(): number {
    return [...this.pools.values()].reduce((sum, p) => sum + p.inFlight, 0);
  }

  /** Ids with a call in flight or queued behind one. */
  get queuedIds(): number {
    return this.order.size;
  }

  // The calls. Business outcomes are `response.outcome`, never errors.

  /** Holds stock for all lines or none. Safe to retry with the same id. */
  reserve(reservationId: string, lines: LineLike[], ttlMs = 0, options?: CallOptions) {
    const request = pb.ReserveRequest.fromPartial({ reservationId, ttlMs, lines: lines.map(toLine) });
    return this.call("reserve", request, options);
  }

  commit(reservationId: string, options?: CallOptions) {
    return this.call("commit", pb.CommitRequest.fromPartial({ reservationId }), options);
  }

  release(reservationId: string, options?: CallOptions) {
    return this.call("release", pb.ReleaseRequest.fromPartial({ reservationId }), options);
  }

  extend(reservationId: string, ttlMs = 0, options?: CallOptions) {
    return this.call("extend", pb.ExtendRequest.fromPartial({ reservationId, ttlMs }), options);
  }

  getReservation(reservationId: string, consistency = pb.Consistency.CONSISTENCY_UNSPECIFIED, options?: CallOptions) {
    return this.call("getReservation", pb.GetReservationRequest.fromPartial({ reservationId, consistency }), options);
  }

  sell(txnId: string, sku: string, node: string, qty: number, options?: CallOptions) {
    return this.call("sell", pb.SellRequest.fromPartial({ txnId, sku, node, qty }), options);
  }

  adjust(txnId: string, sku: string, node: string, delta: number, reason: AdjustReasonLike, options?: CallOptions) {
    const value = typeof reason === "string" ? pb.AdjustReason[`ADJUST_REASON_${reason}`] : reason;
    return this.call("adjust", pb.AdjustRequest.fromPartial({ txnId, sku, node, delta, reason: value }), options);
  }

  /** With `expectedOnHand`, applies only if on_hand still has that value
   * (else FailedPrecondition STALE_ON_HAND, current value in metadata.on_hand). */
  setOnHand(txnId: string, sku: string, node: string, onHand: number, expectedOnHand?: number, options?: CallOptions) {
    return this.call("setOnHand", pb.SetOnHandRequest.fromPartial({ txnId, sku, node, onHand, expectedOnHand }), options);
  }

  setSafetyStock(sku: string, node: string, safetyStock: number, options?: CallOptions) {
    return this.call("setSafetyStock", pb.SetSafetyStockRequest.fromPartial({ sku, node, safetyStock }), options);
  }

  getAvailability(skus: string[], nodes: string[] = [], consistency = pb.Consistency.CONSISTENCY_UNSPECIFIED,
                  options?: CallOptions) {
    return this.call("getAvailability", pb.GetAvailabilityRequest.fromPartial({ skus, nodes, consistency }), options);
  }

  /** Cluster.Status of the member calls go to (an admin token when the server has tokens). */
  async clusterStatus(withDigest = false, options?: CallOptions): Promise<ClusterStatusResponse> {
    const client = this.cluster.get(await this.router.target())!;
    const deadline = Date.now() + (options?.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    return new Promise((resolve, reject) =>
      client.status(ClusterStatusRequest.fromPartial({ withDigest }), this.settings.metadata(), { deadline },
        (error, answer) => (error ? reject(fromServiceError(error)) : resolve(answer))));
  }

  // The machinery.

  private call<N extends OperationName>(name: N, request: OperationTypes[N][0], options?: CallOptions):
      Promise<OperationTypes[N][1]> {
    const op = OPERATIONS[name];
    const timeoutMs = options?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    // Taken synchronously: turns follow the order of calls.
    const turn = this.order.take(orderKey(op, request));
    const abort = new AbortController();
    const attempt: Attempt = { streamed: false };
    const run = (async () => {
      await turn.wait();
      return this.attempts(op, request, deadline, attempt, abort.signal);
    })();
    // The turn ends when this call can no longer be applied: once `run` has
    // stopped and, if its last attempt went on a stream, once that answered.
    run.catch(() => undefined).finally(() => {
      if (attempt.settled) void attempt.settled.then(() => turn.finish());
      else turn.finishAfterPrevious();
    });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = deadlineError();
        abort.abort(error);
        attempt.abandon?.(error);
        reject(error);
      }, Math.max(0, deadline - Date.now()));
    });
    return Promise.race([run, expired]).finally(() => clearTimeout(timer)) as Promise<OperationTypes[N][1]>;
  }

  private async attempts(op: Operation, request: object, deadline: number, attempt: Attempt, signal: AbortSignal) {
    let backoff = INITIAL_BACKOFF_MS;
    const tried = new Set<string>();
    for (let number = 1; ; number++) {
      const address = await this.router.target();
      tried.add(address);
      let failure: StockraftError;
      try {
        return await this.once(address, op, request, deadline, attempt, signal);
      } catch (error) {
        if (!(error instanceof StockraftError) || signal.aborted) throw error;
        failure = error;
      }
      const moved = failure.code === Code.UNAVAILABLE && !tried.has(await this.router.rediscover(address));
      // A unary attempt was already retried by grpc-js on its member; it is
      // sent again only where another member may answer.
      const again = moved || (attempt.streamed && failure.retryable);
      if (!again || number >= MAX_ATTEMPTS) throw failure;
      await sleep(failure.retryDelayMs ?? Math.random() * backoff);
      backoff = Math.min(backoff * BACKOFF_MULTIPLIER, MAX_BACKOFF_MS);
    }
  }

  private async once(address: string, op: Operation, request: object, deadline: number, attempt: Attempt,
                     signal: AbortSignal): Promise<unknown> {
    Object.assign(attempt, { streamed: false, settled: undefined, abandon: undefined });
    if (signal.aborted) throw signal.reason;
    if (Date.now() >= deadline) throw deadlineError(); // past its deadline: never sent
    if (this.multiplex) {
      try {
        const pending = await this.pools.get(address)!.submit(op, request, signal);
        Object.assign(attempt, { streamed: true, settled: pending.settled, abandon: (e: Error) => pending.abandon(e) });
        const response = await pending.answer;
        this.stats.streamed++;
        return response;
      } catch (error) {
        if (!(error instanceof StreamRefused)) throw error;
        attempt.streamed = false; // never applied on a stream: go unary
      }
    }
    this.stats.unary++;
    const client = this.inventory.get(address)! as unknown as Record<string, Function>;
    return new Promise((resolve, reject) => {
      const call = client[op.name].call(this.inventory.get(address), request, this.settings.metadata(), { deadline },
        (error: grpc.ServiceError | null, answer: unknown) => (error ? reject(fromServiceError(error)) : resolve(answer)));
      signal.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }
}

function deadlineError(): StockraftError {
  return localError(Code.DEADLINE_EXCEEDED,
    "the call's deadline passed before its answer came; retry with the same id to learn the outcome", Reason.DEADLINE);
}

function toLine(line: LineLike): pb.Line {
  if (Array.isArray(line)) {
    const [sku, node, qty] = line;
    return { sku, node, qty };
  }
  return line;
}
