// examples/checkout.ts runs as the README says and checks itself.
import { after, before, it } from "node:test";
import * as assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { Server } from "./server";

let server: Server;
before(async () => (server = await Server.start()));
after(async () => server?.stop());

it("the checkout example commits once", async () => {
  const example = path.join(__dirname, "..", "examples", "checkout.js");
  const { stdout } = await promisify(execFile)(process.execPath, [example], {
    env: { ...process.env, STOCKRAFT_SERVER: server.address }, timeout: 60_000,
  });
  assert.match(stdout, /on_hand 5 -> 2/);
  assert.match(stdout, /commit ORDER-\S+: COMMITTED/);
  assert.match(stdout, /INSUFFICIENT_STOCK\n  short: \S+ asked 3, available 2/);
  assert.match(stdout, /checkout applied exactly once/);
});
