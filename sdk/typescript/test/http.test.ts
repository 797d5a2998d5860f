// The HTTP fallback transport over a scripted `fetch` (the server is the test), and the
// automatic fallback from WebSocket over scripted transports and a manual clock.

import { describe, expect, it } from "vitest";
import {
  ErrorCode,
  FallbackTransport,
  type FetchLike,
  HttpStreamTransport,
  type TransportHandlers,
  encodeMessage,
  lengthPrefixed,
} from "../src/index.js";
import { FakeTransport, ManualClock, settle } from "./support/fakes.js";
import { deliver, error, welcome } from "./support/frames.js";

/** One request the transport made, and the means to answer it. */
interface Call {
  url: string;
  init: RequestInit;
  answer(response: Response): void;
}

/** A `fetch` whose every call waits for the test to answer it. */
function scriptedFetch() {
  const calls: Call[] = [];
  const waiting: ((call: Call) => void)[] = [];
  const fetch: FetchLike = (url, init) =>
    new Promise<Response>((resolve) => {
      const call = { url, init, answer: resolve };
      calls.push(call);
      waiting.shift()?.(call);
    });
  /** The `index`th call, once it is made. */
  const call = async (index: number): Promise<Call> => {
    for (let i = 0; i < 20 && calls[index] === undefined; i++) await settle();
    const made = calls[index];
    if (made === undefined) throw new Error(`no call ${index}: ${calls.map((c) => c.url).join(", ")}`);
    return made;
  };
  return { fetch, calls, call };
}

/** A response body the test writes to. */
function stream() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  return { body, controller };
}

const ID = "0123456789abcdef0123456789abcdef";

function opened(body: ReadableStream<Uint8Array>): Response {
  return new Response(body, { status: 200, headers: { "imgate-connection": ID } });
}

/** What the transport told the client. */
function recorder() {
  const events: string[] = [];
  const frames: Uint8Array[] = [];
  const handlers: TransportHandlers = {
    onOpen: () => events.push("open"),
    onFrame: (frame) => frames.push(frame),
    onInvalid: (code) => events.push(`invalid ${code}`),
    onClose: (detail) => events.push(`close: ${detail}`),
  };
  return { events, frames, handlers };
}

const bodyOf = (call: Call) => new Uint8Array(call.init.body as Uint8Array);
const concat = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

const noContent = () => new Response(null, { status: 204 });

describe("HttpStreamTransport", () => {
  it("opens with the first frames, reads frames split anyhow, and sends the rest one POST at a time", async () => {
    const { fetch, calls, call } = scriptedFetch();
    const { events, frames, handlers } = recorder();
    const connection = new HttpStreamTransport("http://gw/imgate", { fetch }).connect(handlers);
    await settle();
    // Ready at once; nothing goes out before the first frame.
    expect([events, calls.length]).toEqual([["open"], 0]);
    const [a, b, c, d] = [1, 2, 3, 4].map((n) => new Uint8Array([0, n])) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    connection.send(a);
    const open = await call(0);
    expect([open.url, open.init.method, open.init.credentials]).toEqual(["http://gw/imgate", "POST", "omit"]);
    expect(open.init.headers).toBeUndefined();
    expect(bodyOf(open)).toEqual(lengthPrefixed(a));
    // Sent while the open is out: both go together in the first POST after it.
    connection.send(b);
    connection.send(c);
    await settle();
    expect(calls.length).toBe(1);
    const { body, controller } = stream();
    open.answer(opened(body));
    const first = await call(1);
    expect(first.url).toBe("http://gw/imgate/send");
    expect((first.init.headers as Record<string, string>)["imgate-connection"]).toBe(ID);
    expect(bodyOf(first)).toEqual(concat(lengthPrefixed(b), lengthPrefixed(c)));
    // Two frames and a bit in one chunk, the rest in another.
    const [w, m] = [encodeMessage(welcome()), encodeMessage(deliver(1))];
    const wire = concat(lengthPrefixed(w), lengthPrefixed(m), lengthPrefixed(m));
    controller.enqueue(wire.slice(0, wire.length - 3));
    await settle();
    expect(frames).toEqual([w, m]);
    controller.enqueue(wire.slice(wire.length - 3));
    await settle();
    expect(frames).toEqual([w, m, m]);
    // One POST at a time.
    connection.send(d);
    await settle();
    expect(calls.length).toBe(2);
    first.answer(noContent());
    const second = await call(2);
    expect(bodyOf(second)).toEqual(lengthPrefixed(d));
    second.answer(noContent());
    controller.close();
    await settle();
    expect(events).toEqual(["open", "close: stream ended"]);
  });

  it("hands on the Error frame of a refused open, then closes", async () => {
    const { fetch, call } = scriptedFetch();
    const { events, frames, handlers } = recorder();
    const connection = new HttpStreamTransport("http://gw/imgate", { fetch }).connect(handlers);
    connection.send(new Uint8Array([0, 1]));
    const refusal = encodeMessage(error(ErrorCode.CONNECTION_LIMIT));
    (await call(0)).answer(new Response(new Uint8Array(lengthPrefixed(refusal)), { status: 429 }));
    await settle();
    expect(frames).toEqual([refusal]);
    expect(events).toEqual(["open", "close: open refused: HTTP 429"]);
  });

  it("on close sends what is queued, then the close request, then cuts the stream", async () => {
    const { fetch, call } = scriptedFetch();
    const { events, handlers } = recorder();
    const connection = new HttpStreamTransport("http://gw/imgate", { fetch }).connect(handlers);
    await settle();
    connection.send(new Uint8Array([0, 8]));
    const open = await call(0);
    connection.send(new Uint8Array([0, 9]));
    connection.close();
    expect(events).toEqual(["open", "close: closed by the client"]);
    open.answer(opened(stream().body));
    const send = await call(1);
    expect(bodyOf(send)).toEqual(lengthPrefixed(new Uint8Array([0, 9])));
    expect(open.init.signal?.aborted).toBe(false);
    send.answer(noContent());
    const close = await call(2);
    expect([close.url, bodyOf(close).length]).toEqual(["http://gw/imgate/close", 0]);
    close.answer(noContent());
    await settle();
    expect(open.init.signal?.aborted).toBe(true);
  });

  it("takes a frame over the limit on the stream as invalid", async () => {
    const { fetch, call } = scriptedFetch();
    const { events, handlers } = recorder();
    const connection = new HttpStreamTransport("http://gw/imgate", { fetch }).connect(handlers);
    connection.send(new Uint8Array([0, 1]));
    const { body, controller } = stream();
    (await call(0)).answer(opened(body));
    await settle();
    controller.enqueue(new Uint8Array([0x7f, 0, 0, 0, 0]));
    await settle();
    expect(events.slice(0, 2)).toEqual(["open", `invalid ${ErrorCode.FRAME_TOO_LARGE}`]);
    expect(events[2]).toMatch(/^close: .*frame of \d+ bytes above 1048576$/);
  });

  it("after a refused POST sends nothing more but still reads the stream's last frame", async () => {
    const { fetch, calls, call } = scriptedFetch();
    const { events, frames, handlers } = recorder();
    const connection = new HttpStreamTransport("http://gw/imgate", { fetch }).connect(handlers);
    connection.send(new Uint8Array([0, 1]));
    const { body, controller } = stream();
    (await call(0)).answer(opened(body));
    await settle();
    connection.send(new Uint8Array([0, 2]));
    (await call(1)).answer(new Response(null, { status: 413 }));
    await settle();
    connection.send(new Uint8Array([0, 3]));
    const last = encodeMessage(error(ErrorCode.FRAME_TOO_LARGE));
    controller.enqueue(lengthPrefixed(last));
    controller.close();
    await settle();
    expect(frames).toEqual([last]);
    expect(events).toEqual(["open", "close: stream ended"]);
    expect(calls.length).toBe(2);
  });
});

describe("FallbackTransport", () => {
  function setup() {
    const [primary, fallback] = [new FakeTransport(), new FakeTransport()];
    const clock = new ManualClock();
    const transport = new FallbackTransport(primary, fallback, { clock, openTimeoutMs: 1_000, stickyMs: 60_000 });
    return { primary, fallback, clock, transport };
  }

  it("falls back when the primary fails to open, and keeps to the fallback for a while", () => {
    const { primary, fallback, clock, transport } = setup();
    const { events, handlers } = recorder();
    transport.connect(handlers);
    primary.last.drop();
    expect(fallback.connections.length).toBe(1);
    fallback.last.open();
    expect(events).toEqual(["open"]);
    expect(transport.active).toBe("fake");
    fallback.last.drop();
    expect(events).toEqual(["open", "close: dropped"]);
    // The next connections skip the primary, until the sticky time is over.
    transport.connect(recorder().handlers);
    expect([primary.connections.length, fallback.connections.length]).toEqual([1, 2]);
    clock.advance(60_000);
    transport.connect(recorder().handlers);
    expect([primary.connections.length, fallback.connections.length]).toEqual([2, 2]);
  });

  it("falls back when the primary stays silent past the deadline", () => {
    const { primary, fallback, clock, transport } = setup();
    const { events, handlers } = recorder();
    const connection = transport.connect(handlers);
    clock.advance(999);
    expect(fallback.connections.length).toBe(0);
    clock.advance(1);
    expect(primary.last.closedByClient).toBe(true);
    expect(fallback.connections.length).toBe(1);
    fallback.last.open();
    connection.send(encodeMessage(deliver(1)));
    expect(fallback.last.kinds).toEqual(["deliver"]);
    // A late open of the abandoned primary is not reported.
    primary.last.open();
    expect(events).toEqual(["open"]);
  });

  it("stays on a primary that opened, and does not fall back for a close the client asked for", () => {
    const { primary, fallback, transport } = setup();
    const first = recorder();
    transport.connect(first.handlers);
    primary.last.open();
    primary.last.drop();
    expect(first.events).toEqual(["open", "close: dropped"]);
    const second = recorder();
    transport.connect(second.handlers).close();
    expect(second.events).toEqual(["close: closed by the client"]);
    expect(fallback.connections.length).toBe(0);
  });
});
