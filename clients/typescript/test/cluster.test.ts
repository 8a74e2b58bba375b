// Three real members: the client finds the leader, and rides out its death.
//
// The leader is killed (SIGKILL) while 16 callers reserve and commit. Every
// call must end answered or failed with a status, and retrying unknown
// outcomes with the same ids must leave each reservation applied once: the
// counters equal the sum of the reservations' lines.
import { after, before, it } from "node:test";
import * as assert from "node:assert/strict";
import { StockraftClient, StockraftError, pb } from "../src";
import { LEADER_SERVICE } from "../src/routing";
import { Server, health, uniqueNames } from "./server";

const CALLERS = 16;
const KILL_AFTER_MS = 1000;
// Callers go on this long after the kill: an election takes 1 to 3 s.
const RUN_AFTER_KILL_MS = 5000;
const STOCK = 100_000;

let members: Server[] = [];
before(async () => (members = await Server.cluster(3)));
after(async () => Promise.all(members.map((m) => m.stop())));

/** The leader by Cluster.Status, which every member answers. */
async function leader(): Promise<Server> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    for (const m of members.filter((x) => x.alive)) {
      const c = new StockraftClient(m.address);
      try {
        const status = await c.clusterStatus(false, { timeoutMs: 1000 });
        const address = status.members.find((x) => x.memberId === status.leaderId)?.address;
        const found = members.find((x) => x.address === address && x.alive);
        if (found) return found;
      } catch {
        // Not answering: try the next.
      } finally {
        c.close();
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no live leader within 15 s");
}

it("targets the leader the health service names", async () => {
  const current = await leader();
  const serving = [];
  for (const m of members) if ((await health(m.address, LEADER_SERVICE)) === 1) serving.push(m.address);
  assert.deepEqual(serving, [current.address]);
  // Given the members with the leader last, the client still picks it.
  const client = new StockraftClient([...members.filter((m) => m !== current).map((m) => m.address), current.address]);
  try {
    assert.equal(await client.target(), current.address);
  } finally {
    client.close();
  }
});

it("loses and doubles nothing when the leader is killed under load", async () => {
  const u = uniqueNames();
  const sku = u("SKU");
  const client = new StockraftClient(members.map((m) => m.address));
  try {
    await client.adjust(u("RCV"), sku, "n", STOCK, "RECEIVE");
    const told = new Map<string, pb.Outcome | StockraftError>();
    const asked = new Map<string, number>();
    const answeredAt: number[] = [];
    let killedAt: number | undefined;
    const caller = async (c: number) => {
      for (let k = 0; killedAt === undefined || Date.now() < killedAt + RUN_AFTER_KILL_MS; k++) {
        const order = `${u("ORDER")}-${c}-${k}`;
        asked.set(order, 1 + (k % 3));
        try {
          told.set(order, (await client.reserve(order, [[sku, "n", asked.get(order)!]], 0, { timeoutMs: 3000 })).outcome);
          if (k % 2) told.set(order, (await client.commit(order, { timeoutMs: 3000 })).outcome);
          answeredAt.push(Date.now());
        } catch (error) {
          assert.ok(error instanceof StockraftError, `not a status: ${error}`);
          told.set(order, error);
        }
      }
    };
    const kill = async () => {
      await new Promise((r) => setTimeout(r, KILL_AFTER_MS));
      await (await leader()).kill();
      killedAt = Date.now();
    };
    await Promise.all([kill(), ...Array.from({ length: CALLERS }, (_, c) => caller(c))]);

    const failed = [...told].filter(([, o]) => o instanceof StockraftError).map(([order]) => order);
    assert.ok(told.size - failed.length > 10 * CALLERS, `only ${told.size - failed.length} answered`);
    // The callers carried on once a new leader was found.
    assert.ok(answeredAt.filter((t) => t > killedAt!).length > CALLERS);
    // Learn every unknown outcome by retrying with the same id.
    for (const order of failed) await client.reserve(order, [[sku, "n", asked.get(order)!]], 0, { timeoutMs: 10_000 });

    const orders = [...told.keys()];
    const states = await Promise.all(orders.map((o) => client.getReservation(o)));
    let held = 0;
    let consumed = 0;
    states.forEach((s, i) => {
      const units = s.lines.reduce((sum, l) => sum + l.qty, 0);
      if (s.state === pb.ReservationState.RESERVATION_STATE_OPEN) held += units;
      if (s.state === pb.ReservationState.RESERVATION_STATE_COMMITTED) consumed += units;
      if (told.get(orders[i]) === pb.Outcome.OUTCOME_COMMITTED) {
        assert.equal(s.state, pb.ReservationState.RESERVATION_STATE_COMMITTED, orders[i]);
      }
    });
    const row = (await client.getAvailability([sku], ["n"])).skus[0].nodes[0];
    assert.deepEqual([row.reserved, STOCK - row.onHand], [held, consumed]);
  } finally {
    client.close();
  }
});
