// The client side of a session (docs/protocol.md §5–§11), sans-IO: it takes frames, the
// transport's state and the time as input, and hands back frames to send, one deadline and
// events. It owns no socket, no timer and no clock, so every rule is tested at exact instants
// (test/session.test.ts). `Client` drives it over a `Transport`.
//
// Poll order after each input: `pollTransmit()` until empty (frames, then maybe a close),
// `pollEvent()` until empty, then re-arm one timer at `pollTimeout()`.

import { create } from "@bufbuild/protobuf";
import { ErrorCode } from "./errors.js";
import {
  AckSchema,
  type Deliver,
  ErrorSchema,
  type Frame,
  FrameSchema,
  type GoAway,
  GoAwayReason,
  HelloSchema,
  type JoinRoom,
  type LeaveRoom,
  PingSchema,
  Platform,
  type Receipt,
  type RegisterPush,
  ResumeSchema,
  type Send,
  type Welcome,
} from "./gen/imgate/v1/frame_pb.js";

/** Fixed settings of a session. */
export interface SessionConfig {
  /** `Hello.app_id`. */
  appId: string;
  /** `Hello.device_id`: stable per installation. */
  deviceId: string;
  /** `Hello.platform`. */
  platform: Platform;
  /** Offer `"lz4"` (the client can decompress). */
  compression: boolean;
  /** Ids of the dictionaries the client holds (`Hello.dictionaries`). */
  dictionaries: number[];
  /** `Hello.max_frame` (0: 1 MiB). */
  maxFrame: number;
  /** An ack waits at most this long for more messages to cover (§8: batched acks). */
  ackDelayMs: number;
  /** ...and is sent at once when this many messages are unacknowledged. */
  ackEvery: number;
  /**
   * Requests on the wire without a receipt, at most; later ones wait in order. The server
   * remembers the last 256 answered requests: ids older than that are answered `accepted`
   * without being forwarded, so a client keeps no more un-receipted (§9).
   */
  maxUnreceipted: number;
  /** The client's own deadline for `Welcome` (§6.4). */
  welcomeTimeoutMs: number;
  /** A connection on which nothing arrives this many heartbeat intervals is dead (§7). */
  deadAfterHeartbeats: number;
}

/** Defaults of {@link SessionConfig} for everything but the identity. */
export const SESSION_DEFAULTS = {
  platform: Platform.WEB,
  compression: true,
  dictionaries: [] as number[],
  maxFrame: 0,
  ackDelayMs: 100,
  ackEvery: 16,
  maxUnreceipted: 256,
  welcomeTimeoutMs: 10_000,
  deadAfterHeartbeats: 2.5,
} satisfies Partial<SessionConfig>;

/** What a client needs to resume its session on a later connection (§10); keep it private. */
export interface ResumeState {
  sessionId: bigint;
  resumeSecret: Uint8Array;
  /** Highest `Deliver.seq` received in order. */
  lastSeq: bigint;
}

/** An upstream request, kept until its receipt arrives (§9). */
export type Request =
  | { case: "send"; value: Send }
  | { case: "registerPush"; value: RegisterPush }
  | { case: "joinRoom"; value: JoinRoom }
  | { case: "leaveRoom"; value: LeaveRoom };

/** Why a connection ended, and whose decision it was. */
export type CloseCause =
  | { kind: "lost" } // the transport dropped without an `Error` frame
  | { kind: "error"; code: number; message: string } // the server's `Error` frame
  | { kind: "goAway"; goAway: GoAway } // closed after `GoAway`
  | { kind: "local"; code: number; message: string } // this client's decision (timeouts, bad frames)
  | { kind: "closed" } // the application closed the client
  | { kind: "loggedOut" }; // the application logged out

/** What the driver does after a connection ended. */
export type Next =
  | { kind: "reconnect"; backoff: true } // exponential back-off with jitter
  | { kind: "reconnect"; backoff: false; delayMs: number; jitterMs: number } // GoAway's delay
  | { kind: "refreshToken" } // ask for a new token, then reconnect with back-off
  | { kind: "stop" };

/** Events for the application, in the order they happened. */
export type SessionEvent =
  | { type: "welcome"; welcome: Welcome }
  | { type: "message"; deliver: Deliver }
  | { type: "receipt"; receipt: Receipt }
  | { type: "goAway"; goAway: GoAway }
  | { type: "pong"; rttMs: number; clockOffsetMs: number }
  | { type: "disconnected"; cause: CloseCause; next: Next };

/** Output of {@link Session.pollTransmit}: a frame to send, or "close the transport now". */
export type Transmit = { kind: "frame"; frame: Frame } | { kind: "close" };

type State = "idle" | "awaitWelcome" | "open" | "closing";

/** Codes after which a client reconnects with resume (§13), besides the 3xxx range. */
const RECONNECT_CODES = new Set<number>([
  ErrorCode.HANDSHAKE_TIMEOUT,
  ErrorCode.HEARTBEAT_TIMEOUT,
  ErrorCode.GOING_AWAY,
  ErrorCode.INTERNAL,
]);

/** §11: wait `reconnect_after_ms` plus a jitter uniform in [0, max(reconnect_after_ms, 1000)]. */
function afterGoAway(goAway: GoAway): Next {
  switch (goAway.reason) {
    case GoAwayReason.TAKEOVER:
    case GoAwayReason.KICKED:
      return { kind: "stop" };
    default:
      return {
        kind: "reconnect",
        backoff: false,
        delayMs: goAway.reconnectAfterMs,
        jitterMs: Math.max(goAway.reconnectAfterMs, 1000),
      };
  }
}

/** What to do after `cause` (§11, §13). */
export function nextAfter(cause: CloseCause): Next {
  switch (cause.kind) {
    case "lost":
    case "local":
      return { kind: "reconnect", backoff: true };
    case "goAway":
      return afterGoAway(cause.goAway);
    case "closed":
    case "loggedOut":
      return { kind: "stop" };
    case "error": {
      const { code } = cause;
      if (code === ErrorCode.UNAUTHENTICATED || code === ErrorCode.TOKEN_EXPIRED) return { kind: "refreshToken" };
      if (RECONNECT_CODES.has(code) || (code >= 3000 && code < 4000)) return { kind: "reconnect", backoff: true };
      return { kind: "stop" };
    }
  }
}

/** The sans-IO client session: one per device, across any number of connections. */
export class Session {
  private state: State = "idle";
  private resume: ResumeState | undefined;
  /** The ack the server has from us (a resume's `last_seq` counts, §10). */
  private ackedSeq = 0n;
  private nextMsgId = 1n;
  private readonly pending = new Map<bigint, Request>();
  /** The requests of `pending` sent on the current connection. */
  private readonly onTheWire = new Set<bigint>();
  private readonly transmits: Transmit[] = [];
  private readonly events: SessionEvent[] = [];
  private welcome: Welcome | undefined;
  private welcomeDeadline = 0;
  private lastSentAt = 0;
  private lastReceivedAt = 0;
  private ackDueAt: number | undefined;
  private cause: CloseCause | undefined;
  private stopped = false;

  constructor(
    private readonly config: SessionConfig,
    resume?: ResumeState,
  ) {
    this.resume = resume;
    this.ackedSeq = resume?.lastSeq ?? 0n;
  }

  /** The resume state of the latest `Welcome` (store it to resume after a page reload). */
  get resumeState(): ResumeState | undefined {
    return this.resume;
  }

  /** The `Welcome` of the open connection, if any. */
  get current(): Welcome | undefined {
    return this.state === "open" ? this.welcome : undefined;
  }

  /** True from `connected()` until `handleClosed()`. */
  get isConnected(): boolean {
    return this.state !== "idle";
  }

  /** True once closed or logged out: the driver does not reconnect. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** How many requests (sent or waiting to be) have no receipt yet. */
  get unreceipted(): number {
    return this.pending.size;
  }

  /** The transport connected: send `Hello` (resuming if there is a session) with `token`. */
  connected(now: number, token: string): void {
    this.state = "awaitWelcome";
    this.cause = undefined;
    this.welcome = undefined;
    this.ackDueAt = undefined;
    this.lastReceivedAt = now;
    this.welcomeDeadline = now + this.config.welcomeTimeoutMs;
    const { config } = this;
    const resume = this.resume && create(ResumeSchema, { ...this.resume });
    // `last_seq` acknowledges everything up to it (§10).
    if (this.resume) this.ackedSeq = this.resume.lastSeq;
    this.transmit(now, {
      case: "hello",
      value: create(HelloSchema, {
        version: 1,
        token,
        appId: config.appId,
        deviceId: config.deviceId,
        platform: config.platform,
        features: config.compression ? ["lz4"] : [],
        dictionaries: config.compression ? config.dictionaries : [],
        maxFrame: config.maxFrame,
        resume,
      }),
    });
  }

  /** A frame arrived on the current connection. */
  handleFrame(now: number, frame: Frame): void {
    if (this.state === "idle" || this.state === "closing") return;
    this.lastReceivedAt = now;
    const { kind } = frame;
    if (kind.case === "error") {
      // The sender closes right after an `Error` (§4); closing our side too bounds the wait.
      // After a GoAway the Error only repeats it (§11): its reason and delay decide.
      if (this.cause?.kind !== "goAway") {
        this.cause = { kind: "error", code: kind.value.code, message: kind.value.message };
      }
      return this.close();
    }
    if (this.state === "awaitWelcome") {
      if (kind.case === "welcome") return this.opened(now, kind.value);
      return this.fail(now, ErrorCode.UNEXPECTED_FRAME, `${kind.case} before Welcome`);
    }
    switch (kind.case) {
      case "deliver":
        return this.delivered(now, kind.value);
      case "receipt":
        this.pending.delete(kind.value.msgId);
        this.onTheWire.delete(kind.value.msgId);
        this.events.push({ type: "receipt", receipt: kind.value });
        return this.sendRequests(now);
      case "pong": {
        const sent = Number(kind.value.clientTimeMs);
        const rttMs = Math.max(0, now - sent);
        const clockOffsetMs = Number(kind.value.serverTimeMs) - (sent + rttMs / 2);
        this.events.push({ type: "pong", rttMs, clockOffsetMs });
        return;
      }
      case "goAway": {
        this.cause = { kind: "goAway", goAway: kind.value };
        this.events.push({ type: "goAway", goAway: kind.value });
        // Settle our acks, then leave at once: a draining server waits for its clients to go
        // (until its grace ends), and the reconnect waits GoAway's delay anyway. Receipts
        // still in flight are answered again after the resume (§9).
        this.sendAck(now);
        if (afterGoAway(kind.value).kind === "reconnect") {
          this.transmit(now, {
            case: "error",
            value: create(ErrorSchema, { code: ErrorCode.NORMAL, message: "going away" }),
          });
        }
        return this.close();
      }
      default:
        return this.fail(now, ErrorCode.UNEXPECTED_FRAME, `unexpected ${kind.case}`);
    }
  }

  /** The current connection broke this protocol (a frame that does not decode): end it. */
  fail(now: number, code: number, message: string): void {
    if (this.state === "idle" || this.state === "closing") return;
    this.transmit(now, { case: "error", value: create(ErrorSchema, { code, message }) });
    this.cause = { kind: "local", code, message };
    this.close();
  }

  /** The transport closed (by either side, or lost). */
  handleClosed(_now: number): void {
    if (this.state === "idle") return;
    this.state = "idle";
    this.welcome = undefined;
    this.ackDueAt = undefined;
    const cause = this.cause ?? { kind: "lost" };
    this.cause = undefined;
    const next = nextAfter(cause);
    if (next.kind === "stop") this.stopped = true;
    // A newer connection of this device owns the session now: never try to resume it.
    const takenOver =
      (cause.kind === "error" && cause.code === ErrorCode.SESSION_TAKEN_OVER) ||
      (cause.kind === "goAway" && cause.goAway.reason === GoAwayReason.TAKEOVER);
    if (takenOver) this.resume = undefined;
    this.events.push({ type: "disconnected", cause, next });
  }

  /** Time passed: acks, heartbeats, the `Welcome` deadline and dead connections. */
  handleTimeout(now: number): void {
    if (this.state === "awaitWelcome" && now >= this.welcomeDeadline) {
      return this.fail(now, ErrorCode.HANDSHAKE_TIMEOUT, "no Welcome in time");
    }
    if (this.state !== "open") return;
    const heartbeat = this.heartbeatMs;
    if (now >= this.lastReceivedAt + heartbeat * this.config.deadAfterHeartbeats) {
      return this.fail(now, ErrorCode.HEARTBEAT_TIMEOUT, "nothing received in 2.5 heartbeats");
    }
    if (this.ackDueAt !== undefined && now >= this.ackDueAt) this.sendAck(now);
    // Any frame counts as liveness (§7): ping only after an interval without one.
    if (now >= this.lastSentAt + heartbeat) this.probe(now);
  }

  /** Sends a `Ping` now (a page that was hidden checks its link without waiting an interval). */
  probe(now: number): void {
    if (this.state !== "open") return;
    this.transmit(now, {
      case: "ping",
      value: create(PingSchema, { clientTimeMs: BigInt(Math.floor(now)), ack: this.takeAck() }),
    });
  }

  /** Changes the dictionaries the next `Hello` announces. */
  offerDictionaries(ids: number[]): void {
    this.config.dictionaries = ids;
  }

  /** The next instant {@link handleTimeout} has work, if any. */
  pollTimeout(): number | undefined {
    if (this.state === "awaitWelcome") return this.welcomeDeadline;
    if (this.state !== "open") return undefined;
    const heartbeat = this.heartbeatMs;
    const deadlines = [this.lastSentAt + heartbeat, this.lastReceivedAt + heartbeat * this.config.deadAfterHeartbeats];
    if (this.ackDueAt !== undefined) deadlines.push(this.ackDueAt);
    return Math.min(...deadlines);
  }

  /** The next thing to do on the transport. */
  pollTransmit(): Transmit | undefined {
    return this.transmits.shift();
  }

  /** The next event for the application. */
  pollEvent(): SessionEvent | undefined {
    return this.events.shift();
  }

  /** Queues an upstream request; it is sent now if the connection is open, else after `Welcome`. */
  request(now: number, build: (msgId: bigint) => Request): bigint {
    const msgId = this.nextMsgId++;
    const request = build(msgId);
    this.pending.set(msgId, request);
    this.sendRequests(now);
    return msgId;
  }

  /** Forgets a request (its caller gave up); a receipt that still comes is reported as usual. */
  forget(msgId: bigint): void {
    this.pending.delete(msgId);
    this.onTheWire.delete(msgId);
  }

  /** Closes the connection deliberately (`Error{1000}`); the server keeps the session (§4). */
  closeNormally(now: number): void {
    this.stopped = true;
    if (this.state === "idle") return;
    this.transmit(now, { case: "error", value: create(ErrorSchema, { code: ErrorCode.NORMAL, message: "closed" }) });
    this.cause = { kind: "closed" };
    this.close();
  }

  /**
   * Logs out (`Error{4004}`, §4): the server ends the session and closes the connection, so
   * the driver waits for the close. The resume state and unsent requests are dropped.
   */
  logout(now: number): void {
    this.stopped = true;
    this.resume = undefined;
    this.pending.clear();
    this.onTheWire.clear();
    if (this.state === "idle") return;
    const awaited = this.state !== "awaitWelcome" && this.state !== "closing";
    this.cause = { kind: "loggedOut" };
    if (!awaited) return this.close();
    this.transmit(now, {
      case: "error",
      value: create(ErrorSchema, { code: ErrorCode.LOGGED_OUT, message: "logged out" }),
    });
    this.state = "closing";
  }

  private get heartbeatMs(): number {
    // A server announcing 0 would make every instant a heartbeat; fall back to the default.
    return this.welcome && this.welcome.heartbeatMs > 0 ? this.welcome.heartbeatMs : 30_000;
  }

  private opened(now: number, welcome: Welcome): void {
    const previous = this.resume;
    this.welcome = welcome;
    this.state = "open";
    if (!welcome.resumed) {
      // A fresh session: `seq` restarts at 1 (§10); what was lost went to the offline path.
      this.ackedSeq = 0n;
    }
    this.resume = {
      sessionId: welcome.sessionId,
      resumeSecret: welcome.resumeSecret,
      lastSeq: welcome.resumed && previous ? previous.lastSeq : 0n,
    };
    this.events.push({ type: "welcome", welcome });
    // Re-send every un-receipted request in `msg_id` order, before anything new (§9): the
    // session answers the ones it has seen from its receipt memory.
    this.onTheWire.clear();
    this.sendRequests(now);
  }

  private delivered(now: number, deliver: Deliver): void {
    const resume = this.resume;
    if (resume === undefined) return;
    const expected = resume.lastSeq + 1n;
    if (deliver.seq > expected) {
      // A gap cannot happen with a correct server: resume from the last in-order seq (§8).
      return this.fail(now, ErrorCode.NORMAL, `gap: seq ${deliver.seq} after ${resume.lastSeq}`);
    }
    if (deliver.seq === expected) {
      resume.lastSeq = expected;
      this.events.push({ type: "message", deliver });
    }
    // A duplicate is dropped but still acknowledged.
    if (resume.lastSeq - this.ackedSeq >= BigInt(this.config.ackEvery)) this.sendAck(now);
    else this.ackDueAt ??= now + this.config.ackDelayMs;
  }

  /** The ack to piggy-back (0: none needed), marking it sent. */
  private takeAck(): bigint {
    const lastSeq = this.resume?.lastSeq ?? 0n;
    this.ackDueAt = undefined;
    if (lastSeq <= this.ackedSeq) return 0n;
    this.ackedSeq = lastSeq;
    return lastSeq;
  }

  private sendAck(now: number): void {
    const seq = this.takeAck();
    if (seq > 0n) this.transmit(now, { case: "ack", value: create(AckSchema, { seq }) });
  }

  /** Sends the oldest un-receipted requests not yet on this connection, up to the limit. */
  private sendRequests(now: number): void {
    if (this.state !== "open") return;
    let slots = this.config.maxUnreceipted;
    for (const [msgId, request] of this.pending) {
      if (slots-- <= 0) return;
      if (this.onTheWire.has(msgId)) continue;
      this.onTheWire.add(msgId);
      this.sendRequest(now, request);
    }
  }

  private sendRequest(now: number, request: Request): void {
    if (request.case === "send") {
      const value = { ...request.value, ack: this.takeAck() };
      this.transmit(now, { case: "send", value });
    } else {
      this.transmit(now, request);
    }
  }

  private transmit(now: number, kind: Frame["kind"]): void {
    this.lastSentAt = now;
    this.transmits.push({ kind: "frame", frame: create(FrameSchema, { kind }) });
  }

  private close(): void {
    this.state = "closing";
    this.transmits.push({ kind: "close" });
  }
}
