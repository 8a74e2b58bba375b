// The multiplexer against a real server: many callers on few streams, order
// per id, deadlines, the in-flight bound and the fall-back to unary calls.
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { Reason, StockraftClient, StockraftError, errors, pb } from "../src";
import { Server, uniqueNames } from "./server";
import { UnaryOnlyProxy } from "./unary-proxy";

let server: Server;
let client: StockraftClient;
before(async () => {
  server = await Server.start();
  client = new StockraftClient(server.address);
});
after(async () => {
  client?.close();
  await server?.stop();
});

async function counter(c: StockraftClient, sku: string, node: string): Promise<[number, number]> {
  const n = (await c.getAvailability([sku], [node])).skus[0].nodes[0];
  return [n.onHand, n.reserved];
}

/** A seeded generator, so a failure replays. */
function random(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

describe("the multiplexed client", () => {
  it("serves 64 concurrent callers on its streams and conserves stock", async () => {
    const u = uniqueNames();
    const sku = u("SKU");
    // The paid orders ask 75 units in all, more than there is: some must be short.
    const start = 60;
    await client.adjust(u("RCV"), sku, "store", start, "RECEIVE");
    const streamedBefore = client.stats.streamed;
    const rng = random(31);
    const wants = Array.from({ length: 64 }, () => 1 + Math.floor(rng() * 3));
    const checkout = async (i: number): Promise<[string, pb.Outcome, number]> => {
      const order = u(`ORDER-${i}`);
      const held = await client.reserve(order, [[sku, "store", wants[i]]]);
      if (held.outcome !== pb.Outcome.OUTCOME_RESERVED) return [order, held.outcome, 0];
      // Two in three orders are paid, the rest cancelled.
      if (i % 3) {
        assert.equal((await client.commit(order)).outcome, pb.Outcome.OUTCOME_COMMITTED);
        return [order, pb.Outcome.OUTCOME_COMMITTED, wants[i]];
      }
      assert.equal((await client.release(order)).outcome, pb.Outcome.OUTCOME_RELEASED);
      return [order, pb.Outcome.OUTCOME_RELEASED, 0];
    };
    const results = await Promise.all(wants.map((_, i) => checkout(i)));
    const committed = results.reduce((sum, [, , units]) => sum + units, 0);
    const [onHand, reserved] = await counter(client, sku, "store");
    assert.equal(reserved, 0);
    assert.equal(start - onHand, committed);
    const expected = new Map([[pb.Outcome.OUTCOME_COMMITTED, pb.Outcome.OUTCOME_COMMITTED],
      [pb.Outcome.OUTCOME_RELEASED, pb.Outcome.OUTCOME_RELEASED], [pb.Outcome.OUTCOME_INSUFFICIENT_STOCK, pb.Outcome.OUTCOME_NOT_FOUND]]);
    const states = await Promise.all(results.map(([order]) => client.getReservation(order)));
    assert.deepEqual(states.map((s) => s.outcome), results.map(([, outcome]) => expected.get(outcome)));
    assert.ok(results.some(([, o]) => o === pb.Outcome.OUTCOME_INSUFFICIENT_STOCK), "the stock should run out");
    assert.equal(client.stats.unary, 0);
    assert.ok(client.stats.streamed - streamedBefore >= 64 * 2 + 1);
  });

  it("runs calls on one id in call order", async () => {
    const u = uniqueNames();
    const sku = u("SKU");
    await client.adjust(u("RCV"), sku, "store", 40, "RECEIVE");
    const calls: Promise<{ outcome: pb.Outcome; state?: pb.ReservationState }>[] = [];
    // Issued back to back, nothing awaited between: without per-id ordering
    // the server may apply a commit before its reserve (NOT_FOUND).
    for (let i = 0; i < 20; i++) {
      const order = u(`ORDER-${i}`);
      calls.push(client.reserve(order, [[sku, "store", 2]]), client.extend(order, 60_000), client.commit(order),
        client.getReservation(order));
    }
    const answers = await Promise.all(calls);
    for (let i = 0; i < answers.length; i += 4) {
      assert.deepEqual(answers.slice(i, i + 3).map((a) => a.outcome),
        [pb.Outcome.OUTCOME_RESERVED, pb.Outcome.OUTCOME_RESERVED, pb.Outcome.OUTCOME_COMMITTED]);
      assert.equal(answers[i + 3].state, pb.ReservationState.RESERVATION_STATE_COMMITTED);
    }
    assert.deepEqual(await counter(client, sku, "store"), [0, 0]);
    await new Promise((r) => setImmediate(r));
    assert.equal(client.queuedIds, 0); // idle ids are forgotten
  });

  it("fails a call past its deadline at once and drops its late answer", async () => {
    const u = uniqueNames();
    const [sku, order] = [u("SKU"), u("ORDER")];
    await client.adjust(u("RCV"), sku, "store", 5, "RECEIVE");
    // Written behind a burst of 300 sales, the reserve cannot be answered
    // within its 1 ms (a timer can fire no sooner): it is sent, then dropped.
    const burst = Array.from({ length: 300 }, (_, i) => client.sell(u(`POS-${i}`), sku, "other", 1));
    const started = Date.now();
    await assert.rejects(client.reserve(order, [[sku, "store", 2]], 0, { timeoutMs: 1 }), (error: StockraftError) => {
      assert.ok(error instanceof errors.DeadlineExceeded);
      assert.equal(error.reason, Reason.DEADLINE);
      return true;
    });
    assert.ok(Date.now() - started < 500);
    await Promise.all(burst);
    for (let i = 0; i < 100 && client.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(client.inFlight, 0);
    // Retried with the same id: answered as a reserve, applied once.
    assert.equal((await client.reserve(order, [[sku, "store", 2]])).outcome, pb.Outcome.OUTCOME_RESERVED);
    assert.deepEqual(await counter(client, sku, "store"), [5, 2]);
  });

  it("never sends a call whose deadline passed while it was queued", async () => {
    const u = uniqueNames();
    const [sku, order] = [u("SKU"), u("ORDER")];
    await client.adjust(u("RCV"), sku, "store", 5, "RECEIVE");
    const first = client.reserve(order, [[sku, "store", 1]]);
    await assert.rejects(client.commit(order, { timeoutMs: 0 }), errors.DeadlineExceeded);
    assert.equal((await first).outcome, pb.Outcome.OUTCOME_RESERVED);
    assert.equal((await client.getReservation(order)).state, pb.ReservationState.RESERVATION_STATE_OPEN);
  });

  it("keeps in flight per stream within its bound", async () => {
    const u = uniqueNames();
    const sku = u("SKU");
    const small = new StockraftClient(server.address, { streams: 1, maxInFlight: 4 });
    try {
      await small.adjust(u("RCV"), sku, "store", 1000, "RECEIVE");
      let peak = 0;
      const watch = setInterval(() => (peak = Math.max(peak, small.inFlight)), 0);
      const sales = Array.from({ length: 60 }, (_, i) => small.sell(u(`POS-${i}`), sku, "store", 1));
      peak = Math.max(peak, small.inFlight);
      const answers = await Promise.all(sales);
      clearInterval(watch);
      assert.ok(answers.every((a) => a.outcome === pb.Outcome.OUTCOME_APPLIED));
      assert.ok(peak >= 1 && peak <= 4, `peak ${peak}`);
      assert.equal((await counter(small, sku, "store"))[0], 940);
    } finally {
      small.close();
    }
  });

  it("falls back to unary calls where Stream is unimplemented", async () => {
    const proxy = new UnaryOnlyProxy(server.address);
    const address = await proxy.start();
    const viaProxy = new StockraftClient(address);
    try {
      const u = uniqueNames();
      const [sku, order] = [u("SKU"), u("ORDER")];
      await viaProxy.adjust(u("RCV"), sku, "store", 3, "RECEIVE");
      const answers = await Promise.all([viaProxy.reserve(order, [[sku, "store", 2]]), viaProxy.commit(order)]);
      assert.deepEqual(answers.map((a) => a.outcome), [pb.Outcome.OUTCOME_RESERVED, pb.Outcome.OUTCOME_COMMITTED]);
      await assert.rejects(viaProxy.sell(u("POS"), sku, "store", -1), (error: StockraftError) => {
        assert.ok(error instanceof errors.InvalidArgument);
        assert.equal(error.reason, Reason.VALUE_OUT_OF_RANGE);
        return true;
      });
      assert.equal(viaProxy.stats.streamed, 0);
      assert.equal(proxy.forwarded, viaProxy.stats.unary);
      assert.deepEqual(await counter(viaProxy, sku, "store"), [1, 0]);
    } finally {
      viaProxy.close();
      proxy.stop();
    }
  });
});
