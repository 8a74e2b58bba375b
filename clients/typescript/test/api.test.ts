// Every call against a real server, once as unary calls and once
// multiplexed over `Stream`: both must answer, and fail, alike.
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Code, Reason, StockraftClient, StockraftError, errors, pb } from "../src";
import { Server, uniqueNames } from "./server";

let server: Server;
before(async () => (server = await Server.start()));
after(async () => server?.stop());

/** Runs `body` and returns the StockraftError it throws. */
async function failure(body: () => Promise<unknown>): Promise<StockraftError> {
  try {
    await body();
  } catch (error) {
    assert.ok(error instanceof StockraftError, `not a StockraftError: ${error}`);
    return error;
  }
  assert.fail("expected an error");
}

for (const multiplex of [false, true]) {
  describe(multiplex ? "multiplexed over Stream" : "unary calls", () => {
    let client: StockraftClient;
    before(() => (client = new StockraftClient(server.address, { multiplex })));
    after(() => {
      // Each transport carried every call of its suite.
      assert.equal(multiplex ? client.stats.unary : client.stats.streamed, 0);
      client.close();
    });

    const level = async (sku: string, node: string) => {
      const answer = await client.getAvailability([sku], [node]);
      const n = answer.skus[0]?.nodes.find((x) => x.node === node);
      return n ? [n.onHand, n.reserved, n.safetyStock, n.available] : [0, 0, 0, 0];
    };
    // A receipt of its own each time (a fresh txn id), never a retry.
    const stock = async (sku: string, node: string, qty: number) =>
      assert.equal((await client.adjust(`RCV-${randomUUID()}`, sku, node, qty, "RECEIVE")).outcome, pb.Outcome.OUTCOME_APPLIED);

    it("reserve then commit consumes the held stock", async () => {
      const u = uniqueNames();
      const [sku, order] = [u("SKU"), u("ORDER")];
      await stock(sku, "store", 10);
      const held = await client.reserve(order, [[sku, "store", 3]], 60_000);
      assert.equal(held.outcome, pb.Outcome.OUTCOME_RESERVED);
      assert.ok(held.expiresAtMs > 0);
      assert.deepEqual(await level(sku, "store"), [10, 3, 0, 7]);
      assert.equal((await client.commit(order)).outcome, pb.Outcome.OUTCOME_COMMITTED);
      assert.deepEqual(await level(sku, "store"), [7, 0, 0, 7]);
      const got = await client.getReservation(order);
      assert.equal(got.state, pb.ReservationState.RESERVATION_STATE_COMMITTED);
      assert.deepEqual(got.lines.map((l) => [l.sku, l.node, l.qty]), [[sku, "store", 3]]);
    });

    it("release returns the stock; a later commit is RESERVATION_NOT_ACTIVE", async () => {
      const u = uniqueNames();
      const [sku, cart] = [u("SKU"), u("CART")];
      await stock(sku, "dc", 5);
      assert.equal((await client.reserve(cart, [[sku, "dc", 5]])).outcome, pb.Outcome.OUTCOME_RESERVED);
      assert.equal((await client.release(cart)).outcome, pb.Outcome.OUTCOME_RELEASED);
      assert.deepEqual(await level(sku, "dc"), [5, 0, 0, 5]);
      const error = await failure(() => client.commit(cart));
      assert.ok(error instanceof errors.FailedPrecondition);
      assert.equal(error.code, Code.FAILED_PRECONDITION);
      assert.equal(error.reason, Reason.RESERVATION_NOT_ACTIVE);
      assert.equal(error.metadata.state, "RELEASED");
      assert.equal(error.metadata.reservation_id, cart);
      assert.equal(error.retryable, false);
    });

    it("extend moves the deadline of an open hold", async () => {
      const u = uniqueNames();
      const [sku, cart] = [u("SKU"), u("CART")];
      await stock(sku, "store", 2);
      const first = await client.reserve(cart, [[sku, "store", 1]], 10_000);
      const extended = await client.extend(cart, 3_600_000);
      assert.equal(extended.outcome, pb.Outcome.OUTCOME_RESERVED);
      assert.ok(extended.expiresAtMs - first.expiresAtMs > 3_500_000);
      const read = await client.getReservation(cart);
      assert.equal(read.state, pb.ReservationState.RESERVATION_STATE_OPEN);
      assert.equal(read.expiresAtMs, extended.expiresAtMs);
    });

    it("a sale is never refused and reports a short node", async () => {
      const u = uniqueNames();
      const sku = u("SKU");
      await stock(sku, "store", 2);
      const sale = await client.sell(u("POS"), sku, "store", 3);
      assert.equal(sale.outcome, pb.Outcome.OUTCOME_APPLIED);
      assert.equal(sale.short, true);
      assert.equal(sale.level?.onHand, -1);
    });

    it("adjust checks the sign against the reason", async () => {
      const u = uniqueNames();
      const sku = u("SKU");
      await stock(sku, "store", 4);
      assert.equal((await client.adjust(u("DMG"), sku, "store", -1, "DAMAGE")).level?.onHand, 3);
      const error = await failure(() => client.adjust(u("BAD"), sku, "store", 1, pb.AdjustReason.ADJUST_REASON_SHRINK));
      assert.ok(error instanceof errors.InvalidArgument);
      assert.equal(error.reason, Reason.DELTA_SIGN_MISMATCH);
      assert.deepEqual(error.fieldViolations.map((v) => v.field), ["delta"]);
      assert.equal((await level(sku, "store"))[0], 3);
    });

    it("set on hand with a stale expected value says the current one", async () => {
      const u = uniqueNames();
      const sku = u("SKU");
      await stock(sku, "store", 6);
      const error = await failure(() => client.setOnHand(u("COUNT-1"), sku, "store", 4, 5));
      assert.ok(error instanceof errors.FailedPrecondition);
      assert.equal(error.reason, Reason.STALE_ON_HAND);
      assert.equal(error.metadata.on_hand, "6");
      assert.equal(error.metadata.expected_on_hand, "5");
      assert.equal((await level(sku, "store"))[0], 6);
      const applied = await client.setOnHand(u("COUNT-2"), sku, "store", 4, Number(error.metadata.on_hand ?? 6));
      assert.equal(applied.level?.onHand, 4);
    });

    it("safety stock is kept back from availability", async () => {
      const u = uniqueNames();
      const sku = u("SKU");
      await stock(sku, "store", 10);
      assert.equal((await client.setSafetyStock(sku, "store", 4)).level?.available, 6);
      assert.deepEqual(await level(sku, "store"), [10, 0, 4, 6]);
    });

    it("availability sums nodes, counting short ones as zero", async () => {
      const u = uniqueNames();
      const sku = u("SKU");
      await stock(sku, "a", 5);
      await stock(sku, "b", 1);
      await client.sell(u("POS"), sku, "b", 3);
      const answer = await client.getAvailability([sku]);
      assert.deepEqual(Object.fromEntries(answer.skus[0].nodes.map((n) => [n.node, n.available])), { a: 5, b: -2 });
      assert.equal(answer.skus[0].totalAvailable, 5);
    });

    it("retries with the same id answer alike and apply once", async () => {
      const u = uniqueNames();
      const [sku, order, txn] = [u("SKU"), u("ORDER"), u("RCV")];
      const first = await client.adjust(txn, sku, "store", 8, "RECEIVE");
      assert.deepEqual(await client.adjust(txn, sku, "store", 8, "RECEIVE"), first);
      assert.equal((await level(sku, "store"))[0], 8);
      const held = await client.reserve(order, [[sku, "store", 3]]);
      const again = await client.reserve(order, [[sku, "store", 3]]);
      assert.equal(again.outcome, pb.Outcome.OUTCOME_RESERVED);
      assert.equal(again.expiresAtMs, held.expiresAtMs);
      assert.equal((await level(sku, "store"))[1], 3);
      assert.equal((await client.commit(order)).outcome, pb.Outcome.OUTCOME_COMMITTED);
      assert.equal((await client.commit(order)).outcome, pb.Outcome.OUTCOME_COMMITTED);
      assert.deepEqual((await level(sku, "store")).slice(0, 2), [5, 0]);
    });

    it("insufficient stock is an outcome with the shortages", async () => {
      const u = uniqueNames();
      const [sku, order] = [u("SKU"), u("ORDER")];
      await stock(sku, "store", 2);
      await stock(sku, "dc", 9);
      const lines: [string, string, number][] = [[sku, "store", 3], [sku, "dc", 4], [sku, "store", 1]];
      const answer = await client.reserve(order, lines);
      assert.equal(answer.outcome, pb.Outcome.OUTCOME_INSUFFICIENT_STOCK);
      assert.deepEqual(answer.shortages.map((s) => [s.sku, s.node, s.requested, s.available]), [[sku, "store", 4, 2]]);
      assert.equal((await level(sku, "dc"))[1], 0);
      await stock(sku, "store", 2);
      assert.equal((await client.reserve(order, lines)).outcome, pb.Outcome.OUTCOME_RESERVED);
    });

    it("invalid input names the field", async () => {
      const u = uniqueNames();
      const error = await failure(() => client.reserve(u("ORDER"), [[u("SKU"), "store", 1], [u("SKU"), "store", 0]]));
      assert.ok(error instanceof errors.InvalidArgument);
      assert.equal(error.code, Code.INVALID_ARGUMENT);
      assert.equal(error.reason, Reason.VALUE_OUT_OF_RANGE);
      assert.equal(error.domain, "stockraft");
      assert.deepEqual(error.fieldViolations.map((v) => v.field), ["lines[1].qty"]);
      assert.equal((await failure(() => client.reserve(u("ORDER"), []))).reason, Reason.NO_LINES);
      const empty = await failure(() => client.sell("", u("SKU"), "store", 1));
      assert.equal(empty.reason, Reason.FIELD_EMPTY);
      assert.deepEqual(empty.fieldViolations.map((v) => v.field), ["txn_id"]);
    });

    it("the same id with another payload is RESERVATION_ID_REUSED", async () => {
      const u = uniqueNames();
      const [sku, order] = [u("SKU"), u("ORDER")];
      await stock(sku, "store", 5);
      await client.reserve(order, [[sku, "store", 1]]);
      const error = await failure(() => client.reserve(order, [[sku, "store", 2]]));
      assert.ok(error instanceof errors.AlreadyExists);
      assert.equal(error.reason, Reason.RESERVATION_ID_REUSED);
    });
  });
}
