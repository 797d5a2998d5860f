// The driver over a scripted transport and a manual clock: back-off with jitter, GoAway's
// delay, offline/online and visibility, token refresh, logout, receipts as promises.

import { describe, expect, it } from "vitest";
import {
  type ClientOptions,
  type EnvironmentHandlers,
  ErrorCode,
  GoAwayReason,
  ImgateClient,
  ImgateError,
  ReceiptStatus,
} from "../src/index.js";
import { FakeTransport, ManualClock, settle } from "./support/fakes.js";
import { deliver, error, goAway, receipt, welcome } from "./support/frames.js";

function setup(options: Partial<ClientOptions> = {}) {
  const transport = new FakeTransport();
  const clock = new ManualClock();
  const client = new ImgateClient({
    transport,
    clock,
    appId: "chat",
    deviceId: "d1",
    token: "tok",
    compression: false,
    environment: null,
    random: () => 0.5,
    ...options,
  });
  return { transport, clock, client };
}

/** Connects and opens the newest connection with a Welcome. */
async function open(transport: FakeTransport, init: Parameters<typeof welcome>[0] = {}) {
  await settle();
  transport.last.open();
  transport.last.receive(welcome(init));
}

describe("ImgateClient", () => {
  it("resolves a send with its receipt and emits messages", async () => {
    const { transport, client } = setup();
    const messages: bigint[] = [];
    client.on("message", (d) => messages.push(d.seq));
    client.connect();
    await open(transport);
    expect(client.state).toBe("open");
    const sent = client.send({ user: "alice" }, "hi");
    expect(transport.last.kinds).toEqual(["hello", "send"]);
    transport.last.receive(receipt(1n, ReceiptStatus.DELIVERED));
    expect((await sent).status).toBe(ReceiptStatus.DELIVERED);
    transport.last.receive(deliver(1));
    expect(messages).toEqual([1n]);
  });

  it("reconnects after a loss with exponential back-off and jitter, and resets it on Welcome", async () => {
    const { transport, clock, client } = setup({ backoff: { initialMs: 100, maxMs: 1_000, multiplier: 2 } });
    const delays: (number | undefined)[] = [];
    client.on("disconnected", (d) => delays.push(d.retryInMs));
    client.connect();
    await open(transport);
    for (let i = 0; i < 5; i++) {
      transport.last.drop();
      clock.advance(2_000);
      await settle();
    }
    // With random 0.5: 3/4 of min(1000, 100 · 2^n).
    expect(delays).toEqual([75, 150, 300, 600, 750]);
    expect(transport.connections).toHaveLength(6);
    transport.last.open();
    transport.last.receive(welcome({ resumed: true }));
    transport.last.drop();
    expect(delays.at(-1)).toBe(75);
  });

  it("waits GoAway's reconnect_after_ms plus jitter before resuming", async () => {
    const { transport, clock, client } = setup();
    client.connect();
    await open(transport);
    transport.last.receive(goAway(GoAwayReason.DRAIN, 2_000));
    transport.last.drop();
    // 2 000 + 0.5 · max(2 000, 1 000)
    clock.advance(2_999);
    await settle();
    expect(transport.connections).toHaveLength(1);
    clock.advance(1);
    await settle();
    expect(transport.connections).toHaveLength(2);
    transport.last.open();
    const hello = transport.last.sent[0];
    expect(hello?.kind.case === "hello" && hello.kind.value.resume?.sessionId).toBe(7n);
  });

  it("stops after GoAway{kicked} and rejects the requests still waiting", async () => {
    const { transport, client } = setup();
    client.connect();
    await open(transport);
    const pending = client.send({ user: "alice" }, "hi");
    const stopped = new Promise((resolve) => client.on("stopped", resolve));
    transport.last.receive(goAway(GoAwayReason.KICKED));
    transport.last.drop();
    expect(await stopped).toMatchObject({ kind: "goAway" });
    await expect(pending).rejects.toBeInstanceOf(ImgateError);
    expect(client.state).toBe("stopped");
  });

  it("waits offline until the device is online again, then reconnects at once", async () => {
    let online = true;
    let handlers: EnvironmentHandlers | undefined;
    const { transport, client } = setup({
      environment: {
        isOnline: () => online,
        subscribe: (h) => {
          handlers = h;
          return () => (handlers = undefined);
        },
      },
    });
    client.connect();
    await open(transport);
    online = false;
    handlers!.offline();
    expect(transport.last.closedByClient).toBe(true);
    expect(client.state).toBe("offline");
    online = true;
    handlers!.online();
    await settle();
    expect(transport.connections).toHaveLength(2);
    await open(transport, { resumed: true });
    expect(client.state).toBe("open");
    handlers!.visible();
    expect(transport.last.kinds.at(-1)).toBe("ping");
    await client.close();
    expect(handlers).toBeUndefined();
  });

  it("asks the token provider again after 2002, and stops on a fixed token", async () => {
    const asked: unknown[] = [];
    const refreshing = setup({
      token: (request) => {
        asked.push(request);
        return `tok${asked.length}`;
      },
    });
    refreshing.client.connect();
    await settle();
    refreshing.transport.last.open();
    refreshing.transport.last.receive(error(ErrorCode.TOKEN_EXPIRED));
    refreshing.clock.advance(1_000);
    await settle();
    refreshing.transport.last.open();
    const hello = refreshing.transport.last.sent[0];
    expect(hello?.kind.case === "hello" && hello.kind.value.token).toBe("tok2");
    expect(asked).toEqual([{ refresh: false }, { refresh: true, code: ErrorCode.TOKEN_EXPIRED }]);

    const fixed = setup();
    const stopped = new Promise((resolve) => fixed.client.on("stopped", resolve));
    fixed.client.connect();
    await settle();
    fixed.transport.last.open();
    fixed.transport.last.receive(error(ErrorCode.TOKEN_EXPIRED));
    expect(await stopped).toMatchObject({ kind: "error", code: ErrorCode.TOKEN_EXPIRED });
  });

  it("logs out: Error 4004, then stops when the server closes, or after the timeout", async () => {
    const { transport, clock, client } = setup({ logoutTimeoutMs: 1_000 });
    client.connect();
    await open(transport);
    const done = client.logout();
    expect(transport.last.sent.at(-1)).toMatchObject({
      kind: { case: "error", value: { code: ErrorCode.LOGGED_OUT } },
    });
    expect(client.state).toBe("open");
    clock.advance(1_000);
    await done;
    expect([client.state, client.resumeState, transport.last.closedByClient]).toEqual(["stopped", undefined, true]);
  });

  it("answers a text message with Error 1008 and reconnects", async () => {
    const { transport, client } = setup();
    client.connect();
    await open(transport);
    transport.last.handlers.onInvalid(ErrorCode.UNSUPPORTED_DATA, "text message");
    expect(transport.last.sent.at(-1)).toMatchObject({ kind: { case: "error", value: { code: 1008 } } });
    expect([transport.last.closedByClient, client.state]).toEqual([true, "waiting"]);
  });

  it("refuses a request larger than the server's frame limit", async () => {
    const { transport, client } = setup();
    client.connect();
    await open(transport);
    await expect(client.send({ user: "alice" }, new Uint8Array(1 << 20))).rejects.toMatchObject({
      code: ErrorCode.FRAME_TOO_LARGE,
    });
  });

  it("stops with the transport's error when it cannot even start (a bad URL)", async () => {
    const client = new ImgateClient({
      url: "not a url",
      WebSocket: class {
        constructor(url: string) {
          throw new SyntaxError(`invalid URL ${url}`);
        }
      },
      appId: "chat",
      deviceId: "d1",
      token: "tok",
      compression: false,
      environment: null,
    });
    const stopped = new Promise((resolve) => client.on("stopped", resolve));
    client.connect();
    expect(await stopped).toMatchObject({ kind: "transport", error: { name: "SyntaxError" } });
  });
});
