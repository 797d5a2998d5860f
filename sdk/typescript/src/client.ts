// The client: drives a sans-IO `Session` over a `Transport` with real timers, reconnects with
// back-off (or GoAway's delay), refreshes tokens, and turns session events into typed events
// and receipt promises.

import { create } from "@bufbuild/protobuf";
import { BACKOFF_DEFAULTS, Backoff, type BackoffConfig } from "./backoff.js";
import { BUILTIN_DICTIONARY_ID, type Dictionary, verifiedBuiltinDictionary } from "./dictionary.js";
import { type Environment, browserEnvironment } from "./environment.js";
import { ErrorCode, ImgateError } from "./errors.js";
import { Emitter } from "./events.js";
import { DEFAULT_MAX_FRAME, type DecodeLimits, HANDSHAKE_LIMITS, decodeMessage, encodeMessage } from "./framing.js";
import {
  type Deliver,
  FrameSchema,
  type GoAway,
  JoinRoomSchema,
  LeaveRoomSchema,
  Platform,
  PushProvider,
  type Receipt,
  RegisterPushSchema,
  SendSchema,
  type Welcome,
} from "./gen/imgate/v1/frame_pb.js";
import {
  type CloseCause,
  type Next,
  type Request,
  type ResumeState,
  SESSION_DEFAULTS,
  Session,
  type SessionConfig,
} from "./session.js";
import { type FallbackOptions, FallbackTransport } from "./fallback.js";
import { type FetchLike, HttpStreamTransport } from "./http.js";
import type { Transport, TransportConnection, TransportHandlers } from "./transport.js";
import { type WebSocketConstructor, WebSocketTransport } from "./websocket.js";

/** Why the client asks for a token. */
export interface TokenRequest {
  /** True when the server refused the previous token (`2001`/`2002`): log in again. */
  refresh: boolean;
  /** The refusal's code, when `refresh`. */
  code?: number;
}

/** Supplies the `Hello.token` of each connection; may log the user in again. */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>;

/** Time and timers; injected by tests. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Settings of an {@link ImgateClient}. */
export interface ClientOptions {
  /** WebSocket URL with the listener's path, e.g. `wss://chat.example.com/ws`. */
  url?: string;
  /** `WebSocket` constructor; default `globalThis.WebSocket` (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /**
   * The HTTP fallback's URL with the listener's base path, e.g.
   * `https://chat.example.com/imgate` (docs/protocol.md §1.1). With `url` too, the client
   * falls back to it by itself when the WebSocket does not open; alone, it is the transport.
   */
  httpUrl?: string;
  /** `fetch` for the HTTP fallback; default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** When to fall back from WebSocket to HTTP (`false`: never, even with `httpUrl`). */
  fallback?: Omit<FallbackOptions, "clock"> | false;
  /** A transport instead of those made of `url` and `httpUrl`. */
  transport?: Transport;
  /** `Hello.app_id`. */
  appId: string;
  /** `Hello.device_id`: stable per installation. */
  deviceId: string;
  /** A fixed token, or a callback asked before every connection. */
  token: string | TokenProvider;
  /** Default {@link Platform.WEB}. */
  platform?: Platform;
  /** Offer LZ4 with the built-in dictionary (default true). */
  compression?: boolean;
  /** Resume this session on the first connection (e.g. stored before a page reload). */
  resume?: ResumeState;
  /** Reconnect back-off. */
  backoff?: Partial<BackoffConfig>;
  /** Ack batching, requests in flight, `Welcome` deadline, `Hello.max_frame` (0 or ≥ 512). */
  session?: Partial<
    Pick<SessionConfig, "ackDelayMs" | "ackEvery" | "maxUnreceipted" | "welcomeTimeoutMs" | "maxFrame">
  >;
  /** How long `logout()` waits for the server to close (default 5 s). */
  logoutTimeoutMs?: number;
  /** Online/visibility notifications; default the browser's where it exists, `null`: none. */
  environment?: Environment | null;
  /** Uniform in [0, 1); default `Math.random`. */
  random?: () => number;
  /** Default: `Date.now` and the global timers. */
  clock?: Clock;
}

/** Where the client is. */
export type ClientState = "idle" | "connecting" | "open" | "waiting" | "offline" | "stopped";

/** Why the client stopped for good. */
export type StopCause =
  | CloseCause
  | { kind: "token"; error: unknown } // the token provider threw
  | { kind: "transport"; error: unknown }; // the transport could not even start (e.g. a bad URL)

/** The events of an {@link ImgateClient}, by name. */
export interface ClientEvents {
  /** A connection is open: a fresh session (`resumed` false, maybe `resumeRefused`) or a resume. */
  open: Welcome;
  /** A message, exactly once and in `seq` order. */
  message: Deliver;
  /** The outcome of a request (also resolves its promise). */
  receipt: Receipt;
  /** The server is leaving; the client reconnects (or stops, for takeover and kick). */
  goAway: GoAway;
  /** A connection ended; `retryInMs` is set when the client reconnects by itself. */
  disconnected: { cause: CloseCause; next: Next; retryInMs?: number };
  /** The client will not reconnect (closed, logged out, kicked, taken over, refused). */
  stopped: StopCause;
  /** A heartbeat answer. */
  pong: { rttMs: number; clockOffsetMs: number };
  /** The state changed. */
  state: ClientState;
}

/** Where a message goes: a user, a room, or the backend itself. */
export type Target = { user: string } | { room: string } | { backend: true };

/** Counters, for diagnostics and tests. */
export interface ClientStats {
  framesIn: number;
  compressedFramesIn: number;
  framesOut: number;
  connections: number;
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

const AUTH_FAILURES_BEFORE_STOP = 3;

type Waiter = { resolve(receipt: Receipt): void; reject(error: unknown): void };

/** An imgate client for one device. Call {@link connect}, listen with {@link on}. */
export class ImgateClient extends Emitter<ClientEvents> {
  /** Counters since construction. */
  readonly stats: ClientStats = { framesIn: 0, compressedFramesIn: 0, framesOut: 0, connections: 0 };
  private readonly session: Session;
  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: Backoff;
  private readonly environment: Environment | undefined;
  private readonly waiters = new Map<bigint, Waiter>();
  private status: ClientState = "idle";
  private connection: TransportConnection | undefined;
  private limits: DecodeLimits = HANDSHAKE_LIMITS;
  private serverMaxFrame = DEFAULT_MAX_FRAME;
  private dictionary: Dictionary | undefined;
  private dictionaryChecked = false;
  private sessionTimer: unknown;
  private retryTimer: unknown;
  private logoutTimer: unknown;
  private refreshToken: TokenRequest = { refresh: false };
  private authFailures = 0;
  private unsubscribe: (() => void) | undefined;
  private pumping = false;
  private pumpAgain = false;

  constructor(private readonly options: ClientOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.backoff = new Backoff({ ...BACKOFF_DEFAULTS, ...options.backoff }, this.random);
    this.environment = options.environment === null ? undefined : (options.environment ?? browserEnvironment());
    const maxFrame = options.session?.maxFrame ?? 0;
    if (maxFrame !== 0 && maxFrame < 512) throw new RangeError("session.maxFrame is 0 or at least 512 (§12)");
    const compression = options.compression ?? true;
    this.session = new Session(
      {
        ...SESSION_DEFAULTS,
        ...options.session,
        appId: options.appId,
        deviceId: options.deviceId,
        platform: options.platform ?? Platform.WEB,
        compression,
        dictionaries: compression ? [BUILTIN_DICTIONARY_ID] : [],
      },
      options.resume,
    );
    this.transport = options.transport ?? ImgateClient.defaultTransport(options, this.clock);
  }

  /** WebSocket to `url`, falling back to HTTP at `httpUrl` when both are given. */
  private static defaultTransport(options: ClientOptions, clock: Clock): Transport {
    const http =
      options.httpUrl === undefined
        ? undefined
        : new HttpStreamTransport(options.httpUrl, options.fetch ? { fetch: options.fetch } : {});
    if (options.url === undefined) {
      if (http !== undefined) return http;
      throw new TypeError("ImgateClient needs `url`, `httpUrl` or `transport`");
    }
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (impl === undefined) {
      if (http !== undefined) return http;
      throw new TypeError("no global WebSocket (Node 20): pass `WebSocket` from the `ws` package");
    }
    const webSocket = new WebSocketTransport(options.url, impl);
    if (http === undefined || options.fallback === false) return webSocket;
    return new FallbackTransport(webSocket, http, { ...options.fallback, clock });
  }

  /** Where the client is. */
  get state(): ClientState {
    return this.status;
  }

  /** The session to resume after a page reload (keep it private), if one was opened. */
  get resumeState(): ResumeState | undefined {
    const state = this.session.resumeState;
    return state && { ...state };
  }

  /** The `Welcome` of the open connection. */
  get welcome(): Welcome | undefined {
    return this.session.current;
  }

  /** Starts connecting (and reconnecting) until {@link close} or {@link logout}. */
  connect(): void {
    if (this.status !== "idle") return;
    this.unsubscribe = this.environment?.subscribe({
      online: () => this.reconnectNow(),
      offline: () => this.connection?.close(),
      visible: () => {
        if (this.status === "waiting") return this.reconnectNow();
        this.session.probe(this.clock.now());
        this.pump();
      },
    });
    void this.attempt();
  }

  /** Sends `payload` to `to`; resolves with its receipt (whatever its status). */
  send(to: Target, payload: Uint8Array | string): Promise<Receipt> {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const dest =
      "user" in to
        ? ({ case: "user", value: to.user } as const)
        : "room" in to
          ? ({ case: "room", value: to.room } as const)
          : ({ case: undefined } as const);
    return this.request((msgId) => ({ case: "send", value: create(SendSchema, { msgId, to: dest, payload: bytes }) }));
  }

  /** Joins `room` (the user's devices receive its messages). */
  joinRoom(room: string): Promise<Receipt> {
    return this.request((msgId) => ({ case: "joinRoom", value: create(JoinRoomSchema, { msgId, room }) }));
  }

  /** Leaves `room`. */
  leaveRoom(room: string): Promise<Receipt> {
    return this.request((msgId) => ({ case: "leaveRoom", value: create(LeaveRoomSchema, { msgId, room }) }));
  }

  /** Registers (or replaces) this device's push token. */
  registerPush(push: { provider: PushProvider; token: string; topic?: string; sandbox?: boolean }): Promise<Receipt> {
    return this.request((msgId) => ({
      case: "registerPush",
      value: create(RegisterPushSchema, { msgId, ...push }),
    }));
  }

  /** Closes the connection (`Error{1000}`); the server keeps the session for a resume. */
  close(): Promise<void> {
    return this.finish("closed", () => this.session.closeNormally(this.clock.now()));
  }

  /**
   * Logs out (`Error{4004}`): the server ends the session for good. Resolves once the server
   * closed the connection (or after `logoutTimeoutMs`).
   */
  logout(): Promise<void> {
    return this.finish("loggedOut", () => {
      this.session.logout(this.clock.now());
      this.logoutTimer = this.clock.setTimeout(() => this.connection?.close(), this.options.logoutTimeoutMs ?? 5_000);
    });
  }

  private finish(kind: "closed" | "loggedOut", act: () => void): Promise<void> {
    if (this.status === "stopped") return Promise.resolve();
    const stopped = new Promise<void>((resolve) => this.once("stopped", () => resolve()));
    act();
    if (!this.session.isConnected) {
      // No handshake to wind down (waiting, or the transport still connecting): stop now.
      const connection = this.connection;
      this.connection = undefined;
      connection?.close();
      this.stop({ kind });
    }
    this.pump();
    return stopped;
  }

  private request(build: (msgId: bigint) => Request): Promise<Receipt> {
    if (this.status === "stopped") return Promise.reject(new ImgateError(ErrorCode.NORMAL, "client stopped"));
    return new Promise<Receipt>((resolve, reject) => {
      let msgId = 0n;
      try {
        msgId = this.session.request(this.clock.now(), (id) => {
          const request = build(id);
          const size = encodeMessage(create(FrameSchema, { kind: request })).length;
          if (size > this.serverMaxFrame) {
            throw new ImgateError(ErrorCode.FRAME_TOO_LARGE, `request of ${size} bytes above ${this.serverMaxFrame}`);
          }
          return request;
        });
      } catch (error) {
        return reject(error);
      }
      this.waiters.set(msgId, { resolve, reject });
      this.pump();
    });
  }

  private async token(): Promise<string> {
    const { token } = this.options;
    return typeof token === "string" ? token : token(this.refreshToken);
  }

  private async attempt(): Promise<void> {
    this.setState("connecting");
    if (!this.dictionaryChecked && this.options.compression !== false) {
      this.dictionary = await verifiedBuiltinDictionary();
      this.dictionaryChecked = true;
      if (this.dictionary === undefined) this.session.offerDictionaries([]);
    }
    let token: string;
    try {
      token = await this.token();
    } catch (error) {
      return this.stop({ kind: "token", error });
    }
    if (this.status !== "connecting") return;
    let started = false;
    this.stats.connections++;
    let connection: TransportConnection;
    const handlers: TransportHandlers = {
      onOpen: () => {
        if (this.connection !== connection) return;
        started = true;
        this.session.connected(this.clock.now(), token);
        this.pump();
      },
      onFrame: (bytes) => {
        if (this.connection !== connection) return;
        this.received(bytes);
        this.pump();
      },
      onInvalid: (code, message) => {
        if (this.connection !== connection) return;
        this.session.fail(this.clock.now(), code, message);
        this.pump();
      },
      onClose: () => {
        if (this.connection !== connection) return;
        this.connection = undefined;
        this.limits = HANDSHAKE_LIMITS;
        if (started) {
          this.session.handleClosed(this.clock.now());
        } else {
          // Closed before the transport handshake completed: as `3002`, back off (§12).
          this.disconnected({ kind: "lost" }, { kind: "reconnect", backoff: true });
        }
        this.pump();
      },
    };
    try {
      connection = this.transport.connect(handlers);
    } catch (error) {
      return this.stop({ kind: "transport", error });
    }
    this.connection = connection;
  }

  private received(bytes: Uint8Array): void {
    this.stats.framesIn++;
    if ((bytes[0] ?? 0) & 0x01) this.stats.compressedFramesIn++;
    const now = this.clock.now();
    try {
      this.session.handleFrame(now, decodeMessage(bytes, this.limits));
    } catch (error) {
      if (!(error instanceof ImgateError)) throw error;
      this.session.fail(now, error.code, error.message);
    }
  }

  /** Drains the session's output; re-entrant calls (a close reporting itself) loop here. */
  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        for (let out = this.session.pollTransmit(); out; out = this.session.pollTransmit()) {
          if (out.kind === "close") {
            this.connection?.close();
            continue;
          }
          this.stats.framesOut++;
          this.connection?.send(encodeMessage(out.frame));
        }
        for (let event = this.session.pollEvent(); event; event = this.session.pollEvent()) {
          this.dispatch(event);
        }
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
    this.armSessionTimer();
  }

  private dispatch(event: NonNullable<ReturnType<Session["pollEvent"]>>): void {
    switch (event.type) {
      case "welcome": {
        const { welcome } = event;
        this.backoff.reset();
        this.authFailures = 0;
        this.refreshToken = { refresh: false };
        this.serverMaxFrame = welcome.maxFrame > 0 ? welcome.maxFrame : DEFAULT_MAX_FRAME;
        const requested = this.options.session?.maxFrame ?? 0;
        this.limits = {
          maxFrame: requested > 0 ? Math.min(requested, DEFAULT_MAX_FRAME) : DEFAULT_MAX_FRAME,
          compression: welcome.features.includes("lz4"),
          dictionary: this.dictionary?.id === welcome.dictionaryId ? this.dictionary : undefined,
        };
        this.setState("open");
        return this.emit("open", welcome);
      }
      case "message":
        return this.emit("message", event.deliver);
      case "receipt": {
        const waiter = this.waiters.get(event.receipt.msgId);
        this.waiters.delete(event.receipt.msgId);
        waiter?.resolve(event.receipt);
        return this.emit("receipt", event.receipt);
      }
      case "goAway":
        return this.emit("goAway", event.goAway);
      case "pong":
        return this.emit("pong", { rttMs: event.rttMs, clockOffsetMs: event.clockOffsetMs });
      case "disconnected":
        return this.disconnected(event.cause, event.next);
    }
  }

  private disconnected(cause: CloseCause, next: Next): void {
    if (next.kind === "stop") {
      this.emit("disconnected", { cause, next });
      return this.stop(cause);
    }
    let delay: number;
    if (next.kind === "refreshToken") {
      const code = cause.kind === "error" ? cause.code : undefined;
      this.authFailures++;
      if (typeof this.options.token === "string" || this.authFailures >= AUTH_FAILURES_BEFORE_STOP) {
        this.emit("disconnected", { cause, next: { kind: "stop" } });
        return this.stop(cause);
      }
      this.refreshToken = { refresh: true, ...(code === undefined ? {} : { code }) };
      delay = this.backoff.next();
    } else if (next.backoff) {
      delay = this.backoff.next();
    } else {
      delay = next.delayMs + this.random() * next.jitterMs;
    }
    this.emit("disconnected", { cause, next, retryInMs: delay });
    this.retry(delay);
  }

  private retry(delayMs: number): void {
    if (this.status === "stopped") return;
    this.clock.clearTimeout(this.retryTimer);
    if (this.environment?.isOnline() === false) {
      // Nothing to try until the device is online again; `online` reconnects.
      return this.setState("offline");
    }
    this.setState("waiting");
    this.retryTimer = this.clock.setTimeout(() => void this.attempt(), delayMs);
  }

  private reconnectNow(): void {
    if (this.status !== "waiting" && this.status !== "offline") return;
    this.clock.clearTimeout(this.retryTimer);
    this.backoff.reset();
    void this.attempt();
  }

  private stop(cause: StopCause): void {
    if (this.status === "stopped") return;
    for (const timer of [this.retryTimer, this.sessionTimer, this.logoutTimer]) this.clock.clearTimeout(timer);
    this.unsubscribe?.();
    this.setState("stopped");
    const error = new ImgateError(
      cause.kind === "error" ? cause.code : ErrorCode.NORMAL,
      `client stopped (${cause.kind}) before the receipt`,
    );
    for (const waiter of this.waiters.values()) waiter.reject(error);
    this.waiters.clear();
    this.emit("stopped", cause);
  }

  private armSessionTimer(): void {
    this.clock.clearTimeout(this.sessionTimer);
    this.sessionTimer = undefined;
    const at = this.session.pollTimeout();
    if (at === undefined || this.status === "stopped") return;
    this.sessionTimer = this.clock.setTimeout(
      () => {
        this.session.handleTimeout(this.clock.now());
        this.pump();
      },
      Math.max(0, at - this.clock.now()),
    );
  }

  private setState(state: ClientState): void {
    if (this.status === state) return;
    this.status = state;
    this.emit("state", state);
  }
}
