// A scripted transport and a manual clock for driving `ImgateClient` without sockets or time.

import {
  type Clock,
  type Frame,
  HANDSHAKE_LIMITS,
  type Transport,
  type TransportHandlers,
  decodeMessage,
  encodeMessage,
} from "../../src/index.js";

/** One connection the client opened; the test plays the server. */
export class FakeConnection {
  readonly sent: Frame[] = [];
  closedByClient = false;
  constructor(readonly handlers: TransportHandlers) {}

  open(): void {
    this.handlers.onOpen();
  }
  /** The server sends `frame`. */
  receive(frame: Frame): void {
    this.handlers.onFrame(encodeMessage(frame));
  }
  /** The network drops the connection. */
  drop(): void {
    this.handlers.onClose("dropped");
  }
  /** Kinds of the frames the client sent. */
  get kinds(): string[] {
    return this.sent.map((f) => f.kind.case ?? "none");
  }
}

/** Records every connection; the newest is `last`. */
export class FakeTransport implements Transport {
  readonly name = "fake";
  readonly connections: FakeConnection[] = [];

  connect(handlers: TransportHandlers) {
    const connection = new FakeConnection(handlers);
    this.connections.push(connection);
    return {
      send: (bytes: Uint8Array) => connection.sent.push(decodeMessage(bytes, HANDSHAKE_LIMITS)),
      close: () => {
        if (connection.closedByClient) return;
        connection.closedByClient = true;
        handlers.onClose("closed by the client");
      },
    };
  }

  get last(): FakeConnection {
    const last = this.connections.at(-1);
    if (last === undefined) throw new Error("no connection yet");
    return last;
  }
}

/** Time that moves only when the test says so. */
export class ManualClock implements Clock {
  private time = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; callback: () => void }>();

  now(): number {
    return this.time;
  }
  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, callback });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Moves to `now + ms`, running every timer due on the way, in order. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
    }
    this.time = end;
  }
}

/** Lets pending promise callbacks (the token provider, `attempt()`) run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
