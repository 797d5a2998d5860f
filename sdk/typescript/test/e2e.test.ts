// The SDK against the real `imgate` binary over WebSocket (Node's `ws`): messages and
// receipts between two clients, LZ4 with the built-in dictionary as the server sends it, a
// resume after the socket is killed while messages arrive, token refresh and logout.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  type Deliver,
  type ImgateClient as Client,
  ImgateClient,
  type ClientOptions,
  GoAwayReason,
  Platform,
  ReceiptStatus,
  ResumeRefused,
} from "../src/index.js";
import { type Server, startServer } from "./support/server.js";
import { next, until } from "./support/wait.js";

let server: Server;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
});

/** A `ws` socket a test can kill as a lost network would: no close handshake, and what was
 * already received but not yet read is gone too. */
class KillableWebSocket extends WebSocket {
  private dead = false;

  kill(): void {
    this.dead = true;
    this.terminate();
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    return this.dead && event === "message" ? false : super.emit(event, ...args);
  }
}

/** A `ws` constructor that keeps every socket it opened, newest last, so a test can kill one. */
function tracked(): { WebSocket: new (url: string, protocols: string) => WebSocket; opened: KillableWebSocket[] } {
  const opened: KillableWebSocket[] = [];
  class Tracked extends KillableWebSocket {
    constructor(url: string, protocols: string) {
      super(url, protocols);
      opened.push(this);
    }
  }
  return { WebSocket: Tracked, opened };
}

function client(user: string, options: Partial<ClientOptions> = {}): ImgateClient {
  const created = new ImgateClient({
    url: server.url,
    WebSocket: tracked().WebSocket,
    appId: "chat",
    deviceId: `${user}-laptop`,
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

describe("against the imgate binary", () => {
  it("exchanges messages with receipts between two clients, LZ4 with the dictionary included", async () => {
    const alice = client("alice");
    const bob = client("bob");
    const [welcome] = await Promise.all([connected(alice), connected(bob)]);
    expect(welcome.userId).toBe("alice");
    expect(welcome.features).toContain("lz4");
    expect(welcome.dictionaryId).toBe(0x6316cacc);

    const toBob = next(bob, "message");
    const receipt = await alice.send({ user: "bob" }, "hi bob");
    expect(receipt.status).toBe(ReceiptStatus.DELIVERED);
    expect(receipt.messageId).toBeGreaterThan(0n);
    const got = await toBob;
    expect([got.from, text(got), got.seq, got.messageId]).toEqual(["alice", "hi bob", 1n, receipt.messageId]);

    const toAlice = next(alice, "message");
    expect((await bob.send({ user: "alice" }, "hi alice")).status).toBe(ReceiptStatus.DELIVERED);
    expect(text(await toAlice)).toBe("hi alice");

    // A long chat message: the server compresses it with the built-in dictionary.
    const long = JSON.stringify({ type: "text", text: "see you at the station at eight ".repeat(60) });
    const compressed = bob.stats.compressedFramesIn;
    const large = next(bob, "message");
    await alice.send({ user: "bob" }, long);
    expect(text(await large)).toBe(long);
    expect(bob.stats.compressedFramesIn).toBe(compressed + 1);

    // The relay backend needs a user or a room.
    const rejected = await alice.send({ backend: true }, "to the backend");
    expect([rejected.status, rejected.reasonCode]).toEqual([ReceiptStatus.REJECTED, 4101]);
  });

  it("joins and leaves a room: members' devices get its messages, the sender's session does not", async () => {
    const alice = client("alice", { deviceId: "alice-room" });
    const bob = client("bob", { deviceId: "bob-room" });
    await Promise.all([connected(alice), connected(bob)]);
    for (const member of [alice, bob]) expect((await member.joinRoom("lobby")).status).toBe(ReceiptStatus.ACCEPTED);
    const bobGot: Deliver[] = [];
    bob.on("message", (deliver) => bobGot.push(deliver));
    let aliceGot = 0;
    alice.on("message", () => aliceGot++);
    expect((await alice.send({ room: "lobby" }, "hello lobby")).status).not.toBe(ReceiptStatus.REJECTED);
    await until(bob, "message", () => bobGot.length === 1);
    expect([bobGot[0]!.room, bobGot[0]!.from, text(bobGot[0]!)]).toEqual(["lobby", "alice", "hello lobby"]);
    expect((await bob.leaveRoom("lobby")).status).toBe(ReceiptStatus.ACCEPTED);
    // Bob left: the next room message is not his; the direct one after it is his next message.
    await alice.send({ room: "lobby" }, "after bob left");
    await alice.send({ user: "bob" }, "direct");
    await until(bob, "message", () => bobGot.length === 2);
    expect(bobGot.map(text)).toEqual(["hello lobby", "direct"]);
    expect(aliceGot).toBe(0);
  });

  it("resumes after its socket is killed while messages arrive: each exactly once, in order", async () => {
    const carol = client("carol");
    const sockets = tracked();
    const bob = client("bob", { deviceId: "bob-phone", WebSocket: sockets.WebSocket });
    await Promise.all([connected(carol), connected(bob)]);
    const received: Deliver[] = [];
    const opens: boolean[] = [];
    bob.on("open", (welcome) => opens.push(welcome.resumed));
    const killed = bob.stats.connections;
    bob.on("message", (deliver) => {
      received.push(deliver);
      if (received.length === 10) sockets.opened.at(-1)!.kill();
    });

    // A burst, killed at its tenth message (the rest in flight), then more while bob is away.
    const count = 40;
    const send = (from: number, to: number) =>
      Promise.all(Array.from({ length: to - from + 1 }, (_, i) => carol.send({ user: "bob" }, `m${from + i}`)));
    const lost = next(bob, "disconnected");
    const burst = send(1, 20);
    expect((await lost).cause.kind).toBe("lost");
    expect(received).toHaveLength(10);
    const receipts = [...(await burst), ...(await send(21, count))];
    for (const receipt of receipts) expect(receipt.status).not.toBe(ReceiptStatus.REJECTED);
    await until(bob, "message", () => received.length >= count);

    expect(received.map(text)).toEqual(Array.from({ length: count }, (_, i) => `m${i + 1}`));
    expect(received.map((d) => d.seq)).toEqual(Array.from({ length: count }, (_, i) => BigInt(i + 1)));
    expect(bob.stats.connections).toBeGreaterThan(killed);
    expect(opens).toEqual([true]);
    expect(bob.resumeState?.lastSeq).toBe(BigInt(count));
  });

  it("asks the token callback again after a refused token", async () => {
    const asked: { refresh: boolean; code?: number }[] = [];
    const carol = client("carol", {
      deviceId: "carol-tablet",
      token: (request) => {
        asked.push(request);
        return asked.length === 1 ? "expired-token" : "tok-carol";
      },
    });
    const welcome = await connected(carol);
    expect(welcome.userId).toBe("carol");
    expect(asked).toEqual([{ refresh: false }, { refresh: true, code: 2001 }]);
  });

  it("close keeps the session for a resume; logout ends it", async () => {
    const first = client("alice", { deviceId: "alice-desk" });
    await connected(first);
    await first.close();
    const kept = first.resumeState!;

    const second = client("alice", { deviceId: "alice-desk", resume: kept });
    const resumed = await connected(second);
    expect([resumed.resumed, resumed.sessionId]).toEqual([true, kept.sessionId]);
    await second.logout();
    expect(second.state).toBe("stopped");

    const third = client("alice", { deviceId: "alice-desk", resume: kept });
    const fresh = await connected(third);
    expect([fresh.resumed, fresh.resumeRefused]).toEqual([false, ResumeRefused.UNKNOWN_SESSION]);
  });

  it("heartbeats at the server's interval and stays connected past 2.5 of them", async () => {
    const desk = client("carol", { deviceId: "carol-desktop", platform: Platform.DESKTOP });
    const welcome = await connected(desk);
    expect(welcome.heartbeatMs).toBe(1_000);
    let pongs = 0;
    desk.on("pong", () => pongs++);
    // Three answered pings span 3 intervals: the server would have closed a silent link.
    await until(desk, "pong", () => pongs >= 3, 10_000);
    expect([desk.state, desk.stats.connections]).toEqual(["open", 1]);
  });

  it("stops without reconnecting when an operator kicks the session", async () => {
    const kicked = client("bob", { deviceId: "bob-kiosk" });
    const welcome = await connected(kicked);
    const stopped = next(kicked, "stopped");
    const goAway = next(kicked, "goAway");
    const id = welcome.sessionId.toString(16).padStart(16, "0");
    const response = await fetch(`${server.admin}/v1/sessions/${id}`, { method: "DELETE" });
    expect(response.status).toBe(204);
    expect((await goAway).reason).toBe(GoAwayReason.KICKED);
    await stopped;
    expect([kicked.state, kicked.stats.connections]).toEqual(["stopped", 1]);
  });
});
