// Typed errors from google.rpc details, including ones this client does not
// know (no server needed).
import { it } from "node:test";
import * as assert from "node:assert/strict";
import { Metadata } from "@grpc/grpc-js";
import { Code, errors } from "../src";
import { Any } from "../src/gen/google/protobuf/any";
import { DebugInfo, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

const pack = (type: string, value: Uint8Array): Any => ({ typeUrl: `type.googleapis.com/${type}`, value: Buffer.from(value) });

it("keeps an unknown reason and skips an unknown detail type", () => {
  const status = Status.encode({
    code: Code.RESOURCE_EXHAUSTED, message: "later", details: [
      pack("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: "A_REASON_FROM_THE_FUTURE", domain: "stockraft", metadata: { k: "v" } }).finish()),
      pack("google.rpc.DebugInfo", DebugInfo.encode({ stackEntries: [], detail: "skipped" }).finish()),
      pack("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: 1, nanos: 500_000_000 } }).finish()),
    ],
  }).finish();
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(status));
  const error = errors.fromServiceError({ code: Code.RESOURCE_EXHAUSTED, details: "later", metadata });
  assert.ok(error instanceof errors.ResourceExhausted);
  assert.deepEqual([error.reason, error.metadata, error.retryDelayMs], ["A_REASON_FROM_THE_FUTURE", { k: "v" }, 1500]);
  assert.equal(error.retryable, true);
});

it("ignores details whose code contradicts the status", () => {
  const status = Status.encode({ code: Code.NOT_FOUND, message: "x", details: [
    pack("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: "WRONG", domain: "stockraft", metadata: {} }).finish())] }).finish();
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(status));
  const error = errors.fromServiceError({ code: Code.UNAVAILABLE, details: "x", metadata });
  assert.equal(error.reason, undefined);
  assert.ok(error instanceof errors.Unavailable);
});

it("makes an unknown code a plain StockraftError", () => {
  const error = errors.fromStreamError({ code: 99, message: "new", details: [] });
  assert.equal(error.constructor, errors.StockraftError);
  assert.equal(error.retryable, false);
});
