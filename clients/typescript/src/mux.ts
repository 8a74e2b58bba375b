// Many callers' operations over a few long-lived `Stream` calls.
//
// A unary call costs the server about eight times the CPU of the same
// operation sent over `Stream`. A StreamPool keeps a few streams open to one
// member; each operation gets a fresh `id`, is written to the least loaded
// stream, and its answer (in completion order) is matched back by id.
//
// - In flight per stream is bounded (the server stops reading a stream past
//   1,024 operations in flight); callers wait for a slot.
// - A `StreamError` answer becomes the typed error the unary call would
//   have raised.
// - A stream that breaks after answering fails its operations in flight with
//   UNAVAILABLE (each is safe to retry with its id) and is reopened on the
//   next operation.
// - A stream that fails before answering anything (UNIMPLEMENTED, a role not
//   allowed to stream, a member that cannot be reached) hands its operations
//   back with StreamRefused, for the caller to send as unary calls; after
//   UNIMPLEMENTED, PERMISSION_DENIED or UNAUTHENTICATED the pool stops trying.
import type { ClientDuplexStream, Metadata } from "@grpc/grpc-js";
import { Code, Reason, StockraftError, fromServiceError, fromStreamError, localError } from "./errors";
import type { InventoryClient, StreamRequest, StreamResponse } from "./gen/stockraft/v1/inventory";
import type { Operation } from "./operations";

/** Below the server's 1,024 so its reader never stalls on us. */
export const DEFAULT_MAX_IN_FLIGHT = 512;
export const DEFAULT_STREAMS = 2;
const PERMANENT = new Set([Code.UNIMPLEMENTED, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED]);

/** The stream path cannot carry this operation: send it unary. */
export class StreamRefused extends Error {
  constructor(readonly cause: StockraftError) {
    super(cause.message);
  }
}

/** The stream closed while the operation waited for a slot. */
class Closed extends Error {}

/** One operation sent on a stream. `answer` is what the caller awaits;
 * `settled` resolves once the operation can no longer be applied, which the
 * per-id ordering waits for even after the caller has given up. */
export class Pending {
  private resolveAnswer!: (value: unknown) => void;
  private rejectAnswer!: (error: Error) => void;
  private resolveSettled!: () => void;
  readonly answer = new Promise<unknown>((resolve, reject) => {
    this.resolveAnswer = resolve;
    this.rejectAnswer = reject;
  });
  readonly settled = new Promise<void>((resolve) => (this.resolveSettled = resolve));
  private answered = false;

  resolve(result: unknown, error?: Error): void {
    this.resolveSettled();
    if (this.answered) return; // the caller gave up: the late answer is dropped
    this.answered = true;
    if (error) this.rejectAnswer(error);
    else this.resolveAnswer(result);
  }

  /** The caller stopped waiting: fail its wait now, drop the answer later. */
  abandon(error: Error): void {
    if (this.answered) return;
    this.answered = true;
    this.rejectAnswer(error);
  }
}

/** A counting semaphore: bounds the operations in flight on one stream. */
class Slots {
  private readonly waiters: Array<() => void> = [];
  constructor(private free: number) {}

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

class OneStream {
  private readonly pending = new Map<number, Pending>();
  private readonly slots: Slots;
  private readonly call: ClientDuplexStream<StreamRequest, StreamResponse>;
  private nextId = 1;
  private answered = false;
  closed = false;

  constructor(client: InventoryClient, metadata: () => Metadata, maxInFlight: number,
              private readonly onRefused: (failure: StockraftError) => void) {
    this.slots = new Slots(maxInFlight);
    this.call = client.stream(metadata());
    this.call.on("data", (response: StreamResponse) => this.deliver(response));
    this.call.on("error", (error) => this.failAll(fromServiceError(error as never)));
    this.call.on("status", (status) => {
      if (status.code === Code.OK) {
        this.failAll(localError(Code.UNAVAILABLE, "the server ended the stream", Reason.STREAM_BROKEN));
      }
    });
  }

  get load(): number {
    return this.pending.size;
  }

  async submit(op: Operation, request: object, signal: AbortSignal): Promise<Pending> {
    await this.slots.acquire();
    if (this.closed || signal.aborted) {
      this.slots.release();
      if (signal.aborted) throw signal.reason;
      throw new Closed();
    }
    const id = this.nextId++;
    const pending = new Pending();
    this.pending.set(id, pending);
    this.call.write({ id, [op.name]: request } as StreamRequest);
    return pending;
  }

  private deliver(response: StreamResponse): void {
    const pending = this.pending.get(response.id);
    if (!pending) return;
    this.pending.delete(response.id);
    this.answered = true;
    this.slots.release();
    if (response.error) {
      pending.resolve(undefined, fromStreamError(response.error));
      return;
    }
    for (const [field, value] of Object.entries(response)) {
      if (field !== "id" && value !== undefined) {
        pending.resolve(value);
        return;
      }
    }
    pending.resolve(undefined, localError(Code.INTERNAL, "an answer of a kind this client does not know", "UNKNOWN_RESULT"));
  }

  private failAll(failure: StockraftError): void {
    if (this.closed) return;
    this.closed = true;
    this.call.end();
    let error: Error;
    if (!this.answered) {
      error = new StreamRefused(failure);
      this.onRefused(failure);
    } else if (failure.code === Code.UNAVAILABLE) {
      error = failure;
    } else {
      error = localError(Code.UNAVAILABLE,
        `the stream broke (${failure.message}); the operation may or may not have been applied: retry it with the same id`,
        Reason.STREAM_BROKEN);
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const item of pending) {
      this.slots.release();
      item.resolve(undefined, error);
    }
  }

  close(): void {
    this.failAll(localError(Code.UNAVAILABLE, "the client closed the stream", Reason.STREAM_BROKEN));
    this.call.cancel();
  }
}

/** The streams to one member. */
export class StreamPool {
  private readonly streams: Array<OneStream | undefined>;
  /** Set once the member has shown it will never carry our streams. */
  refused?: StockraftError;

  constructor(private readonly client: InventoryClient, private readonly metadata: () => Metadata,
              streams = DEFAULT_STREAMS, private readonly maxInFlight = DEFAULT_MAX_IN_FLIGHT) {
    this.streams = new Array(streams).fill(undefined);
  }

  get inFlight(): number {
    return this.streams.reduce((sum, s) => sum + (s?.load ?? 0), 0);
  }

  async submit(op: Operation, request: object, signal: AbortSignal): Promise<Pending> {
    for (;;) {
      if (this.refused) throw new StreamRefused(this.refused);
      try {
        return await this.pick().submit(op, request, signal);
      } catch (error) {
        if (!(error instanceof Closed)) throw error;
        // Its stream broke while it waited: try a fresh one.
      }
    }
  }

  private pick(): OneStream {
    for (let i = 0; i < this.streams.length; i++) {
      if (!this.streams[i] || this.streams[i]!.closed) {
        this.streams[i] = new OneStream(this.client, this.metadata, this.maxInFlight, (f) => this.noteRefusal(f));
      }
    }
    return this.streams.reduce((a, b) => (b!.load < a!.load ? b : a))!;
  }

  private noteRefusal(failure: StockraftError): void {
    if (PERMANENT.has(failure.code)) this.refused = failure;
  }

  close(): void {
    for (const stream of this.streams) stream?.close();
  }
}
