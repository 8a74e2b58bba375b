// A retry-safe checkout against a stockraft server.
//
//   npm run build && STOCKRAFT_SERVER=127.0.0.1:50051 node dist/examples/checkout.js
//
// 1. Receives 5 units of a SKU at a store (so it runs on an empty server).
// 2. Reserves 3 for an order, with the order id as the reservation id.
// 3. Commits with a deadline too short to be met: the commit is sent, the
//    server applies it, but the caller stops waiting first, so for the
//    caller the outcome is unknown (as when a network drops an answer).
// 4. Retries the commit with the same id: it answers COMMITTED, and on_hand
//    drops by 3 exactly once however many tries it took.
// 5. A second order asks for more than is left: INSUFFICIENT_STOCK is an
//    outcome, with the shortages, not an error.
// Exits non-zero if what the server holds is not what one checkout leaves.
import { randomUUID } from "node:crypto";
import { Code, StockraftClient, StockraftError, pb } from "../src";

/** Repeat a call whose outcome is unknown. Safe because the request carries
 * the same id each time: the server applies it at most once and answers a
 * repeat as it answered the first. (The client already retries UNAVAILABLE
 * itself; a deadline is the caller's to retry.) */
async function withRetries<T>(call: (timeoutMs?: number) => Promise<T>, firstTimeoutMs?: number, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(attempt === 1 ? firstTimeoutMs : undefined);
    } catch (error) {
      const unknown = error instanceof StockraftError && [Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE].includes(error.code);
      if (!unknown || attempt === attempts) throw error;
      console.log(`  attempt ${attempt}: ${error.codeName}, outcome unknown; retrying with the same id`);
    }
  }
}

const outcome = (answer: { outcome: pb.Outcome }) => pb.Outcome[answer.outcome].replace(/^OUTCOME_/, "");

async function main(): Promise<number> {
  const run = randomUUID().slice(0, 8);
  const [sku, node, order, otherOrder] = [`SKU-${run}`, "store-7", `ORDER-${run}`, `ORDER-${run}-B`];
  // Addresses from STOCKRAFT_SERVER (comma-separated), else 127.0.0.1:50051.
  const client = new StockraftClient();
  const onHand = async () => (await client.getAvailability([sku], [node])).skus[0]?.nodes[0]?.onHand ?? 0;
  try {
    await client.adjust(`RECEIPT-${run}`, sku, node, 5, "RECEIVE");
    const before = await onHand();
    console.log(`${sku}@${node}: on_hand ${before}`);

    const held = await withRetries((timeoutMs) => client.reserve(order, [[sku, node, 3]], 15 * 60_000, { timeoutMs }));
    console.log(`reserve ${order}: ${outcome(held)}`);
    if (held.outcome === pb.Outcome.OUTCOME_INSUFFICIENT_STOCK) {
      for (const s of held.shortages) console.log(`  short: ${s.sku}@${s.node} asked ${s.requested}, available ${s.available}`);
      return 1;
    }

    // Payment went through: commit. The first try waits 1 ms only.
    const committed = await withRetries((timeoutMs) => client.commit(order, { timeoutMs }), 1);
    console.log(`commit ${order}: ${outcome(committed)}`);
    const again = await client.commit(order);
    console.log(`commit ${order} again: ${outcome(again)} (answered as the first)`);
    const repeat = await client.reserve(order, [[sku, node, 3]]);
    console.log(`reserve ${order} again: ${outcome(repeat)} (its current state; nothing held twice)`);

    const after = await onHand();
    console.log(`${sku}@${node}: on_hand ${before} -> ${after}`);

    const short = await client.reserve(otherOrder, [[sku, node, after + 1]]);
    console.log(`reserve ${otherOrder}: ${outcome(short)}`);
    for (const s of short.shortages) console.log(`  short: ${s.sku}@${s.node} asked ${s.requested}, available ${s.available}`);

    const ok = committed.outcome === pb.Outcome.OUTCOME_COMMITTED && again.outcome === pb.Outcome.OUTCOME_COMMITTED
      && after === before - 3 && short.outcome === pb.Outcome.OUTCOME_INSUFFICIENT_STOCK;
    console.log(ok ? "checkout applied exactly once" : "UNEXPECTED: see above");
    return ok ? 0 : 1;
  } finally {
    client.close();
  }
}

main().then((code) => (process.exitCode = code), (error) => {
  console.error(error);
  process.exitCode = 1;
});
