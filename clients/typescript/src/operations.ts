// The catalogue of Inventory operations: one row per call.
//
// In the generated code an operation's grpc-js client method and its
// `StreamRequest` / `StreamResponse` oneof field share one name (`reserve`,
// `getReservation`...). `idField` is the request field holding the
// client-chosen id, which the multiplexer orders by.
import type * as pb from "./gen/stockraft/v1/inventory";

export type OperationName =
  | "reserve" | "commit" | "release" | "extend" | "getReservation"
  | "sell" | "adjust" | "setOnHand" | "setSafetyStock" | "getAvailability";

export interface Operation {
  readonly name: OperationName;
  readonly idField?: "reservationId" | "txnId";
}

/** Request and response types of each operation. */
export interface OperationTypes {
  reserve: [pb.ReserveRequest, pb.ReserveResponse];
  commit: [pb.CommitRequest, pb.CommitResponse];
  release: [pb.ReleaseRequest, pb.ReleaseResponse];
  extend: [pb.ExtendRequest, pb.ExtendResponse];
  getReservation: [pb.GetReservationRequest, pb.GetReservationResponse];
  sell: [pb.SellRequest, pb.SellResponse];
  adjust: [pb.AdjustRequest, pb.AdjustResponse];
  setOnHand: [pb.SetOnHandRequest, pb.SetOnHandResponse];
  setSafetyStock: [pb.SetSafetyStockRequest, pb.SetSafetyStockResponse];
  getAvailability: [pb.GetAvailabilityRequest, pb.GetAvailabilityResponse];
}

export const OPERATIONS: Record<OperationName, Operation> = {
  reserve: { name: "reserve", idField: "reservationId" },
  commit: { name: "commit", idField: "reservationId" },
  release: { name: "release", idField: "reservationId" },
  extend: { name: "extend", idField: "reservationId" },
  getReservation: { name: "getReservation", idField: "reservationId" },
  sell: { name: "sell", idField: "txnId" },
  adjust: { name: "adjust", idField: "txnId" },
  setOnHand: { name: "setOnHand", idField: "txnId" },
  setSafetyStock: { name: "setSafetyStock" },
  getAvailability: { name: "getAvailability" },
};

/** The key whose operations must run one at a time, in call order: the
 * server runs a stream's operations concurrently, so a commit sent while its
 * reserve is in flight could be applied first. */
export function orderKey(op: Operation, request: object): string | undefined {
  if (op.idField === undefined) return undefined;
  return `${op.idField}:${(request as Record<string, string>)[op.idField]}`;
}
