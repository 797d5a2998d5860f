// The SDK across a restart of the real binary: SIGTERM drains (GoAway{drain}), the client
// waits and retries until a new process listens on the same address with the same data
// directory, and resumes its durable session there: same session, seq goes on.

import { afterAll, expect, it } from "vitest";
import WebSocket from "ws";
import { type Deliver, GoAwayReason, ImgateClient, ReceiptStatus } from "../src/index.js";
import { type Server, startServer } from "./support/server.js";
import { next, until } from "./support/wait.js";

let current: Server | undefined;
const clients: ImgateClient[] = [];

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await current?.stop();
});

function client(user: string, url: string): ImgateClient {
  const created = new ImgateClient({
    url,
    WebSocket,
    appId: "chat",
    deviceId: `${user}-restart`,
    token: `tok-${user}`,
    environment: null,
    backoff: { initialMs: 20, maxMs: 200 },
  });
  clients.push(created);
  return created;
}

it("resumes its session on the restarted server after a drain", async () => {
  current = await startServer();
  const alice = client("alice", current.url);
  const bob = client("bob", current.url);
  const opened = Promise.all([next(alice, "open"), next(bob, "open")]);
  alice.connect();
  bob.connect();
  const [, bobWelcome] = await opened;
  const got: Deliver[] = [];
  bob.on("message", (deliver) => got.push(deliver));
  await alice.send({ user: "bob" }, "before");
  await until(bob, "message", () => got.length === 1);

  const goAway = next(bob, "goAway");
  const resumed = next(bob, "open", (welcome) => welcome.resumed, 30_000);
  const first = current;
  current = undefined;
  await first.drain();
  expect((await goAway).reason).toBe(GoAwayReason.DRAIN);
  current = await startServer({ dir: first.dir, wsBind: first.wsAddr });

  expect((await resumed).sessionId).toBe(bobWelcome.sessionId);
  await until(alice, "open", () => alice.state === "open", 30_000);
  expect((await alice.send({ user: "bob" }, "after")).status).toBe(ReceiptStatus.DELIVERED);
  await until(bob, "message", () => got.length === 2);
  expect(got.map((d) => [d.seq, new TextDecoder().decode(d.payload)])).toEqual([
    [1n, "before"],
    [2n, "after"],
  ]);
});
