// TypeScript client of stockraft, the Raft-replicated inventory reservation
// server. README.md (clients/) tells how to use it.
export { StockraftClient } from "./client";
export type { CallOptions, ClientOptions, LineLike } from "./client";
export * as errors from "./errors";
export { Code, Reason, StockraftError } from "./errors";
export type { FieldViolation } from "./errors";
export * as pb from "./gen/stockraft/v1/inventory";
export * as clusterPb from "./gen/stockraft/v1/cluster";
export { resolveAddresses } from "./config";
