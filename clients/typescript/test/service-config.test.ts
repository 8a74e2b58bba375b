// The service config is in force: grpc-js retries UNAVAILABLE with the same
// request, and a pushback of -1 stops it.
import { after, before, it } from "node:test";
import * as assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { StockraftClient, errors, pb } from "../src";
import { Server, uniqueNames } from "./server";
import { UnaryOnlyProxy } from "./unary-proxy";

let server: Server;
let proxy: UnaryOnlyProxy;
let client: StockraftClient;
before(async () => {
  server = await Server.start();
  proxy = new UnaryOnlyProxy(server.address);
  client = new StockraftClient(await proxy.start(), { multiplex: false });
});
after(async () => {
  client?.close();
  proxy?.stop();
  await server?.stop();
});

it("retries UNAVAILABLE with the same request", async () => {
  const u = uniqueNames();
  const [sku, order] = [u("SKU"), u("ORDER")];
  await client.adjust(u("RCV"), sku, "store", 5, "RECEIVE");
  proxy.seen.length = 0;
  proxy.faults = [[status.UNAVAILABLE, "10"], [status.UNAVAILABLE, undefined]];
  assert.equal((await client.reserve(order, [[sku, "store", 2]])).outcome, pb.Outcome.OUTCOME_RESERVED);
  assert.equal(proxy.seen.length, 3); // one request, three attempts
  assert.equal(new Set(proxy.seen.map((b) => b.toString("hex"))).size, 1);
});

it("stops at a negative pushback", async () => {
  proxy.seen.length = 0;
  proxy.faults = [[status.RESOURCE_EXHAUSTED, "-1"], [status.RESOURCE_EXHAUSTED, "-1"], [status.RESOURCE_EXHAUSTED, "-1"]];
  await assert.rejects(client.getAvailability([uniqueNames()("SKU")]), errors.ResourceExhausted);
  assert.equal(proxy.seen.length, 1);
  proxy.faults = [];
});
