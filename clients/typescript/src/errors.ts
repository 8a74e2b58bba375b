// Typed errors: a gRPC status and its google.rpc details as one exception.
//
// The server attaches google.rpc details to every status: an ErrorInfo
// (domain "stockraft", a stable `reason`, facts in `metadata`), a BadRequest
// naming the offending field on INVALID_ARGUMENT, and a RetryInfo when a
// retry can succeed. Unary calls carry them in the `grpc-status-details-bin`
// trailer; a `Stream` operation in `StreamError.details`. Both become the
// same error here, so callers branch on `code` and `reason` alike whichever
// way the call travelled. Reasons are plain strings: one this version does
// not know still arrives intact.
import { Metadata, status as Code } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { Any } from "./gen/google/protobuf/any";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";
import type { StreamError } from "./gen/stockraft/v1/inventory";

export { Code };
export const DOMAIN = "stockraft";
/** The domain of errors the client makes itself (a local deadline, a broken stream). */
export const CLIENT_DOMAIN = "stockraft.client";

/** The ErrorInfo reasons the server sends (README, error table). */
export const Reason = {
  // INVALID_ARGUMENT
  FIELD_EMPTY: "FIELD_EMPTY",
  FIELD_TOO_LONG: "FIELD_TOO_LONG",
  VALUE_OUT_OF_RANGE: "VALUE_OUT_OF_RANGE",
  TTL_TOO_LONG: "TTL_TOO_LONG",
  NO_LINES: "NO_LINES",
  TOO_MANY_LINES: "TOO_MANY_LINES",
  LINE_SUM_TOO_LARGE: "LINE_SUM_TOO_LARGE",
  UNKNOWN_ENUM_VALUE: "UNKNOWN_ENUM_VALUE",
  ZERO_DELTA: "ZERO_DELTA",
  DELTA_SIGN_MISMATCH: "DELTA_SIGN_MISMATCH",
  TOO_MANY_ITEMS: "TOO_MANY_ITEMS",
  TOO_MANY_ROWS: "TOO_MANY_ROWS",
  OPERATION_MISSING: "OPERATION_MISSING",
  // ALREADY_EXISTS
  RESERVATION_ID_REUSED: "RESERVATION_ID_REUSED",
  TXN_ID_REUSED: "TXN_ID_REUSED",
  // FAILED_PRECONDITION
  RESERVATION_NOT_ACTIVE: "RESERVATION_NOT_ACTIVE",
  STALE_ON_HAND: "STALE_ON_HAND",
  // OUT_OF_RANGE
  ON_HAND_OUT_OF_RANGE: "ON_HAND_OUT_OF_RANGE",
  // RESOURCE_EXHAUSTED
  OVERLOADED: "OVERLOADED",
  TOO_MANY_OPEN_RESERVATIONS: "TOO_MANY_OPEN_RESERVATIONS",
  COUNTER_LIMIT: "COUNTER_LIMIT",
  NODES_PER_SKU_LIMIT: "NODES_PER_SKU_LIMIT",
  // UNAVAILABLE (the last four are also sent while leadership moves)
  NO_LEADER: "NO_LEADER",
  LEADER_UNREACHABLE: "LEADER_UNREACHABLE",
  OUTCOME_UNKNOWN: "OUTCOME_UNKNOWN",
  SHUTTING_DOWN: "SHUTTING_DOWN",
  MEMBER_REMOVED: "MEMBER_REMOVED",
  CLOCK_UNCONFIRMED: "CLOCK_UNCONFIRMED",
  NOT_LEADER: "NOT_LEADER",
  LEADERSHIP_UNCONFIRMED: "LEADERSHIP_UNCONFIRMED",
  PROPOSAL_DROPPED: "PROPOSAL_DROPPED",
  REMOVES_LEADER: "REMOVES_LEADER",
  // UNAUTHENTICATED / PERMISSION_DENIED
  TOKEN_MISSING: "TOKEN_MISSING",
  TOKEN_UNKNOWN: "TOKEN_UNKNOWN",
  ROLE_TOO_LOW: "ROLE_TOO_LOW",
  // Made by this client (domain CLIENT_DOMAIN).
  DEADLINE: "DEADLINE",
  STREAM_BROKEN: "STREAM_BROKEN",
} as const;

export interface FieldViolation {
  /** A path into the request, e.g. "lines[2].qty". */
  field: string;
  description: string;
  reason: string;
}

export interface ErrorFacts {
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  /** Milliseconds the server advises waiting before a retry (RetryInfo). */
  retryDelayMs?: number;
}

/** A call the server (or the client) could not carry out as asked. */
export class StockraftError extends Error {
  readonly code: Code;
  readonly reason?: string;
  readonly domain?: string;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  readonly retryDelayMs?: number;

  constructor(code: Code, readonly details: string, facts: ErrorFacts = {}) {
    super(`${Code[code] ?? code}: ${details}${facts.reason ? ` [${facts.reason}]` : ""}`);
    this.name = new.target.name;
    this.code = code;
    this.reason = facts.reason;
    this.domain = facts.domain;
    this.metadata = facts.metadata ?? {};
    this.fieldViolations = facts.fieldViolations ?? [];
    this.retryDelayMs = facts.retryDelayMs;
  }

  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }

  /** Whether repeating the call (with the same id) can succeed: UNAVAILABLE
   * always can, RESOURCE_EXHAUSTED only when the server sent a RetryInfo
   * (it omits one for limits no retry passes). */
  get retryable(): boolean {
    if (this.code === Code.UNAVAILABLE) return true;
    return this.code === Code.RESOURCE_EXHAUSTED && this.retryDelayMs !== undefined;
  }
}

export class InvalidArgument extends StockraftError {}
export class DeadlineExceeded extends StockraftError {}
export class AlreadyExists extends StockraftError {}
export class PermissionDenied extends StockraftError {}
export class ResourceExhausted extends StockraftError {}
export class FailedPrecondition extends StockraftError {}
export class OutOfRange extends StockraftError {}
export class Unimplemented extends StockraftError {}
export class Internal extends StockraftError {}
export class Unavailable extends StockraftError {}
export class Unauthenticated extends StockraftError {}

const BY_CODE: Partial<Record<Code, typeof StockraftError>> = {
  [Code.INVALID_ARGUMENT]: InvalidArgument,
  [Code.DEADLINE_EXCEEDED]: DeadlineExceeded,
  [Code.ALREADY_EXISTS]: AlreadyExists,
  [Code.PERMISSION_DENIED]: PermissionDenied,
  [Code.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [Code.FAILED_PRECONDITION]: FailedPrecondition,
  [Code.OUT_OF_RANGE]: OutOfRange,
  [Code.UNIMPLEMENTED]: Unimplemented,
  [Code.INTERNAL]: Internal,
  [Code.UNAVAILABLE]: Unavailable,
  [Code.UNAUTHENTICATED]: Unauthenticated,
};

const typeName = (any: Any) => any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);

/** The error for a status code, its message and google.rpc details.
 * Details of a type this client does not know are skipped, not fatal. */
export function makeError(code: Code, message: string, details: Any[] = [], local: ErrorFacts = {}): StockraftError {
  const facts: ErrorFacts = { ...local, fieldViolations: [] };
  for (const any of details) {
    try {
      switch (typeName(any)) {
        case "google.rpc.ErrorInfo": {
          const info = ErrorInfo.decode(any.value);
          Object.assign(facts, { reason: info.reason, domain: info.domain, metadata: info.metadata });
          break;
        }
        case "google.rpc.BadRequest":
          for (const v of BadRequest.decode(any.value).fieldViolations) {
            facts.fieldViolations!.push({ field: v.field, description: v.description, reason: v.reason });
          }
          break;
        case "google.rpc.RetryInfo": {
          const delay = RetryInfo.decode(any.value).retryDelay;
          if (delay) facts.retryDelayMs = delay.seconds * 1000 + delay.nanos / 1e6;
          break;
        }
      }
    } catch {
      // A detail that does not decode is dropped; the code still stands.
    }
  }
  const Class = BY_CODE[code] ?? StockraftError;
  return new Class(code, message, facts);
}

/** The error for a failed unary call (or a stream's final status). */
export function fromServiceError(error: ServiceError | { code: Code; details: string; metadata?: Metadata }): StockraftError {
  let details: Any[] = [];
  const raw = error.metadata?.get("grpc-status-details-bin")[0];
  if (Buffer.isBuffer(raw)) {
    try {
      const status = Status.decode(raw);
      // A trailer contradicting the code (a proxy rewrote one): trust the code.
      if (status.code === error.code) details = status.details;
    } catch {
      details = [];
    }
  }
  return makeError(error.code, error.details ?? "", details);
}

/** The error for a `StreamError`: the unary status it stands for. */
export function fromStreamError(error: StreamError): StockraftError {
  return makeError(error.code as Code, error.message, error.details);
}

/** An error the client raises itself, with the same shape. */
export function localError(code: Code, message: string, reason: string): StockraftError {
  return makeError(code, message, [], { reason, domain: CLIENT_DOMAIN });
}
