// Automatic fallback: try the primary transport (WebSocket), and when it does not open — it
// fails or stays silent past a deadline, as behind a proxy that blocks WebSocket — the
// fallback one (HTTP streaming) with the same handlers, so the client sees one connection.
// Once the fallback was needed, later connections go straight to it for a while.

import type { Clock } from "./client.js";
import type { Transport, TransportConnection, TransportHandlers } from "./transport.js";

/** Settings of a {@link FallbackTransport}. */
export interface FallbackOptions {
  /** How long the primary may take to open before the fallback is tried. Default 5 s. */
  openTimeoutMs?: number;
  /** After a fallback, how long new connections skip the primary. Default 5 min. */
  stickyMs?: number;
  /** Default: `Date.now` and the global timers. */
  clock?: Clock;
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

/** `primary` (e.g. WebSocket), else `fallback` (e.g. {@link HttpStreamTransport}). */
export class FallbackTransport implements Transport {
  readonly name: string;
  /** The transport the latest connection opened on, if one did. */
  active: string | undefined;
  private readonly openTimeoutMs: number;
  private readonly stickyMs: number;
  private readonly clock: Clock;
  private fallbackUntil = -Infinity;

  constructor(
    private readonly primary: Transport,
    private readonly fallback: Transport,
    options: FallbackOptions = {},
  ) {
    this.name = `${primary.name}|${fallback.name}`;
    this.openTimeoutMs = options.openTimeoutMs ?? 5_000;
    this.stickyMs = options.stickyMs ?? 300_000;
    this.clock = options.clock ?? systemClock;
  }

  connect(handlers: TransportHandlers): TransportConnection {
    if (this.clock.now() < this.fallbackUntil) return this.open(this.fallback, handlers);
    let current: TransportConnection | undefined;
    let opened = false;
    let switched = false;
    let givenUp = false;
    let timer: unknown;
    const switchOver = (): void => {
      if (switched) return;
      switched = true;
      this.clock.clearTimeout(timer);
      this.fallbackUntil = this.clock.now() + this.stickyMs;
      // Its `onClose`, if it reports one, is ignored from here on.
      current?.close();
      current = this.open(this.fallback, handlers);
    };
    const primaryHandlers: TransportHandlers = {
      onOpen: () => {
        if (switched) return;
        this.clock.clearTimeout(timer);
        opened = true;
        this.active = this.primary.name;
        handlers.onOpen();
      },
      onFrame: (frame) => {
        if (!switched) handlers.onFrame(frame);
      },
      onInvalid: (code, message) => {
        if (!switched) handlers.onInvalid(code, message);
      },
      onClose: (detail) => {
        if (switched) return;
        this.clock.clearTimeout(timer);
        // A connection that opened and then closed is an ordinary loss, and one the client
        // gave up its own decision: no fallback.
        if (opened || givenUp) return handlers.onClose(detail);
        switchOver();
      },
    };
    timer = this.clock.setTimeout(switchOver, this.openTimeoutMs);
    const primary = this.primary.connect(primaryHandlers);
    if (!switched) current = primary;
    return {
      send: (frame) => current?.send(frame),
      close: () => {
        this.clock.clearTimeout(timer);
        givenUp = true;
        current?.close();
      },
    };
  }

  private open(transport: Transport, handlers: TransportHandlers): TransportConnection {
    return transport.connect({
      ...handlers,
      onOpen: () => {
        this.active = transport.name;
        handlers.onOpen();
      },
    });
  }
}
