// The HTTP fallback against the real `imgate` binary: a client whose WebSocket is blocked
// falls back by itself and talks to a WebSocket client; a stream cut while messages arrive
// is resumed over HTTP with every message exactly once, in order.

import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  type ClientOptions,
  type Deliver,
  FallbackTransport,
  type FetchLike,
  HttpStreamTransport,
  ImgateClient,
  ReceiptStatus,
  WebSocketTransport,
} from "../src/index.js";
import { type Server, startServer } from "./support/server.js";
import { next, until } from "./support/wait.js";

let server: Server;
let blockedUrl: string;
const clients: ImgateClient[] = [];

/** A port nothing listens on: connecting is refused, as a firewall that blocks WebSocket. */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  server = await startServer();
  blockedUrl = `ws://127.0.0.1:${await closedPort()}/ws`;
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
});

function client(user: string, options: Partial<ClientOptions>): ImgateClient {
  const created = new ImgateClient({
    appId: "chat",
    deviceId: `${user}-browser`,
    token: `tok-${user}`,
    environment: null,
    backoff: { initialMs: 20, maxMs: 200 },
    ...options,
  });
  clients.push(created);
  return created;
}

async function connected(c: ImgateClient) {
  const opened = next(c, "open");
  c.connect();
  return opened;
}

const text = (deliver: Deliver) => new TextDecoder().decode(deliver.payload);

/** `fetch` whose open streams a test can cut, as a lost network would. */
function cuttable(): { fetch: FetchLike; cut(): void; opens: number } {
  const streams: AbortController[] = [];
  const state = {
    opens: 0,
    fetch: ((url, init) => {
      if (url.endsWith("/imgate")) {
        state.opens++;
        const cut = new AbortController();
        streams.push(cut);
        const signals = [cut.signal, ...(init.signal ? [init.signal] : [])];
        return fetch(url, { ...init, signal: AbortSignal.any(signals) });
      }
      return fetch(url, init);
    }) as FetchLike,
    cut: () => streams.at(-1)?.abort(),
  };
  return state;
}

describe("the HTTP fallback against the imgate binary", () => {
  it("is used by itself when the WebSocket is blocked, and talks to a WebSocket client", async () => {
    const alice = client("alice", { url: server.url, WebSocket });
    const bob = client("bob", { url: blockedUrl, httpUrl: server.httpUrl, WebSocket });
    const [, welcome] = await Promise.all([connected(alice), connected(bob)]);
    expect(welcome.userId).toBe("bob");

    const toBob = next(bob, "message");
    expect((await alice.send({ user: "bob" }, "over websocket")).status).toBe(ReceiptStatus.DELIVERED);
    expect(text(await toBob)).toBe("over websocket");
    const toAlice = next(alice, "message");
    expect((await bob.send({ user: "alice" }, "over http")).status).toBe(ReceiptStatus.DELIVERED);
    const got = await toAlice;
    expect([got.from, text(got)]).toEqual(["bob", "over http"]);

    // A long message arrives compressed on the fallback too.
    const long = JSON.stringify({ type: "text", text: "see you at the station at eight ".repeat(60) });
    const large = next(bob, "message");
    await alice.send({ user: "bob" }, long);
    expect(text(await large)).toBe(long);
  });

  it("names the transport it fell back to", async () => {
    const transport = new FallbackTransport(
      new WebSocketTransport(blockedUrl, WebSocket),
      new HttpStreamTransport(server.httpUrl),
    );
    const carol = client("carol", { transport });
    await connected(carol);
    expect(transport.active).toBe("http");
  });

  it("resumes after its stream is cut while messages arrive: each exactly once, in order", async () => {
    const carol = client("carol", { deviceId: "carol-laptop", url: server.url, WebSocket });
    const network = cuttable();
    const bob = client("bob", { deviceId: "bob-http", httpUrl: server.httpUrl, fetch: network.fetch });
    await Promise.all([connected(carol), connected(bob)]);
    const received: Deliver[] = [];
    const opens: boolean[] = [];
    bob.on("open", (welcome) => opens.push(welcome.resumed));
    bob.on("message", (deliver) => {
      received.push(deliver);
      if (received.length === 10) network.cut();
    });

    const count = 40;
    const send = (from: number, to: number) =>
      Promise.all(Array.from({ length: to - from + 1 }, (_, i) => carol.send({ user: "bob" }, `m${from + i}`)));
    const lost = next(bob, "disconnected");
    const burst = send(1, 20);
    expect((await lost).cause.kind).toBe("lost");
    const receipts = [...(await burst), ...(await send(21, count))];
    for (const receipt of receipts) expect(receipt.status).not.toBe(ReceiptStatus.REJECTED);
    await until(bob, "message", () => received.length >= count);

    expect(received.map(text)).toEqual(Array.from({ length: count }, (_, i) => `m${i + 1}`));
    expect(received.map((d) => d.seq)).toEqual(Array.from({ length: count }, (_, i) => BigInt(i + 1)));
    expect(opens).toEqual([true]);
    expect(network.opens).toBe(2);
  });
});
