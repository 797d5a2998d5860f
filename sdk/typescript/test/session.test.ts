// The sans-IO session at exact instants: handshake, resume, acks, duplicates, requests and
// their re-sends, heartbeats, dead connections, GoAway and the error codes' consequences.

import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ErrorCode,
  GoAwayReason,
  Platform,
  ResumeRefused,
  SESSION_DEFAULTS,
  SendSchema,
  Session,
  type SessionEvent,
  nextAfter,
} from "../src/index.js";
import { deliver, drain, error, goAway, kinds, pong, receipt, welcome } from "./support/frames.js";

function session(resume?: ConstructorParameters<typeof Session>[1]): Session {
  return new Session(
    { ...SESSION_DEFAULTS, appId: "chat", deviceId: "d1", platform: Platform.WEB, dictionaries: [0x6316cacc] },
    resume,
  );
}

function events(s: Session): SessionEvent[] {
  const out: SessionEvent[] = [];
  for (let e = s.pollEvent(); e; e = s.pollEvent()) out.push(e);
  return out;
}

function opened(at = 0): Session {
  const s = session();
  s.connected(at, "tok");
  s.handleFrame(at, welcome());
  drain(s);
  events(s);
  return s;
}

function send(s: Session, now: number, user = "alice") {
  return s.request(now, (msgId) => ({
    case: "send",
    value: create(SendSchema, { msgId, to: { case: "user", value: user }, payload: new Uint8Array([1]) }),
  }));
}

describe("Session", () => {
  it("opens with a Hello offering lz4 and the dictionary, then waits for Welcome", () => {
    const s = session();
    s.connected(0, "tok");
    const [hello] = drain(s);
    const value = hello?.kind === "frame" && hello.frame.kind.case === "hello" ? hello.frame.kind.value : undefined;
    expect(value?.resume).toBeUndefined();
    expect(value).toMatchObject({
      version: 1,
      token: "tok",
      appId: "chat",
      deviceId: "d1",
      platform: Platform.WEB,
      features: ["lz4"],
      dictionaries: [0x6316cacc],
    });
    expect(s.pollTimeout()).toBe(SESSION_DEFAULTS.welcomeTimeoutMs);
  });

  it("gives up on a Welcome that does not come in time, and reconnects with back-off", () => {
    const s = session();
    s.connected(0, "tok");
    drain(s);
    s.handleTimeout(SESSION_DEFAULTS.welcomeTimeoutMs - 1);
    expect(drain(s)).toEqual([]);
    s.handleTimeout(SESSION_DEFAULTS.welcomeTimeoutMs);
    expect(kinds(s)).toEqual(["error", "close"]);
    s.handleClosed(SESSION_DEFAULTS.welcomeTimeoutMs);
    expect(events(s)).toEqual([
      {
        type: "disconnected",
        cause: { kind: "local", code: ErrorCode.HANDSHAKE_TIMEOUT, message: "no Welcome in time" },
        next: { kind: "reconnect", backoff: true },
      },
    ]);
  });

  it("delivers in order once, drops duplicates, and acks in batches after ackDelayMs", () => {
    const s = opened();
    s.handleFrame(10, deliver(1));
    s.handleFrame(11, deliver(2));
    s.handleFrame(12, deliver(2));
    s.handleFrame(13, deliver(1));
    expect(events(s).map((e) => e.type === "message" && e.deliver.seq)).toEqual([1n, 2n]);
    expect(drain(s)).toEqual([]);
    expect(s.pollTimeout()).toBe(10 + SESSION_DEFAULTS.ackDelayMs);
    s.handleTimeout(10 + SESSION_DEFAULTS.ackDelayMs);
    const [ack] = drain(s);
    expect(ack?.kind === "frame" && ack.frame.kind.case === "ack" && ack.frame.kind.value.seq).toBe(2n);
  });

  it("acks at once every ackEvery messages", () => {
    const s = opened();
    for (let seq = 1; seq < SESSION_DEFAULTS.ackEvery; seq++) s.handleFrame(seq, deliver(seq));
    expect(drain(s)).toEqual([]);
    s.handleFrame(50, deliver(SESSION_DEFAULTS.ackEvery));
    expect(kinds(s)).toEqual(["ack"]);
  });

  it("piggy-backs the ack on a Send and then owes none", () => {
    const s = opened();
    s.handleFrame(10, deliver(1));
    send(s, 20);
    const [frame] = drain(s);
    expect(frame?.kind === "frame" && frame.frame.kind.case === "send" && frame.frame.kind.value.ack).toBe(1n);
    s.handleTimeout(10 + SESSION_DEFAULTS.ackDelayMs);
    expect(drain(s)).toEqual([]);
  });

  it("resumes from the last in-order seq on a gap", () => {
    const s = opened();
    s.handleFrame(10, deliver(1));
    s.handleFrame(11, deliver(3));
    expect(kinds(s)).toEqual(["error", "close"]);
    s.handleClosed(12);
    const [, disconnected] = events(s);
    expect(disconnected).toMatchObject({ type: "disconnected", next: { kind: "reconnect", backoff: true } });
    s.connected(100, "tok");
    const [hello] = drain(s);
    expect(hello?.kind === "frame" && hello.frame.kind.case === "hello" && hello.frame.kind.value.resume).toMatchObject(
      {
        sessionId: 7n,
        resumeSecret: new Uint8Array([1, 2, 3]),
        lastSeq: 1n,
      },
    );
  });

  it("keeps requests until their receipt and re-sends the unanswered ones after a resume, in order", () => {
    const s = opened();
    const first = send(s, 1);
    const second = send(s, 2);
    const third = send(s, 3);
    expect([first, second, third]).toEqual([1n, 2n, 3n]);
    drain(s);
    s.handleFrame(4, receipt(second));
    expect(events(s)).toMatchObject([{ type: "receipt", receipt: { msgId: 2n } }]);
    s.handleClosed(5);
    events(s);
    // Queued while disconnected: sent after Welcome, after the older ones.
    const fourth = send(s, 6);
    expect(drain(s)).toEqual([]);
    s.connected(10, "tok");
    s.handleFrame(11, welcome({ resumed: true }));
    const resent = drain(s).map((t) => t.kind === "frame" && t.frame.kind.case === "send" && t.frame.kind.value.msgId);
    expect(resent).toEqual([false, first, third, fourth]);
    expect(s.unreceipted).toBe(3);
  });

  it("keeps at most maxUnreceipted requests on the wire; a receipt lets the next one go", () => {
    const s = new Session({ ...SESSION_DEFAULTS, appId: "chat", deviceId: "d1", maxUnreceipted: 2 });
    s.connected(0, "tok");
    s.handleFrame(0, welcome());
    drain(s);
    const ids = [send(s, 1), send(s, 2), send(s, 3)];
    const sent = () =>
      drain(s).map((t) => t.kind === "frame" && t.frame.kind.case === "send" && t.frame.kind.value.msgId);
    expect(sent()).toEqual([ids[0], ids[1]]);
    s.handleFrame(4, receipt(ids[1]!));
    expect(sent()).toEqual([ids[2]]);
    // After a reconnect the oldest two go again, in order.
    s.handleClosed(5);
    s.connected(6, "tok");
    drain(s);
    s.handleFrame(7, welcome({ resumed: true }));
    expect(sent()).toEqual([ids[0], ids[2]]);
  });

  it("restarts seq after a refused resume (a fresh session) and still re-sends its requests", () => {
    const s = opened();
    s.handleFrame(1, deliver(1));
    send(s, 2);
    s.handleClosed(3);
    events(s);
    s.connected(10, "tok");
    drain(s);
    s.handleFrame(11, welcome({ resumed: false, refused: ResumeRefused.UNKNOWN_SESSION, sessionId: 8n }));
    expect(kinds(s)).toEqual(["send"]);
    s.handleFrame(12, deliver(1, "fresh"));
    const delivered = events(s).filter((e) => e.type === "message");
    expect(delivered).toHaveLength(1);
    expect(s.resumeState).toMatchObject({ sessionId: 8n, lastSeq: 1n });
  });

  it("pings after an interval without sending and computes round trip and clock offset", () => {
    const s = opened();
    expect(s.pollTimeout()).toBe(1_000);
    s.handleTimeout(999);
    expect(drain(s)).toEqual([]);
    s.handleTimeout(1_000);
    expect(kinds(s)).toEqual(["ping"]);
    s.handleFrame(1_040, pong(1_000, 5_000));
    expect(events(s)).toEqual([{ type: "pong", rttMs: 40, clockOffsetMs: 5_000 - 1_020 }]);
    // Any frame sent counts as liveness: a Send at 1 500 moves the next Ping to 2 500.
    send(s, 1_500);
    drain(s);
    s.handleTimeout(2_040);
    expect(drain(s)).toEqual([]);
    expect(s.pollTimeout()).toBe(2_500);
  });

  it("treats a connection silent for 2.5 heartbeats as dead", () => {
    const s = opened();
    s.handleTimeout(1_000);
    drain(s);
    s.handleTimeout(2_000);
    drain(s);
    s.handleTimeout(2_499);
    expect(kinds(s)).toEqual([]);
    s.handleTimeout(2_500);
    expect(kinds(s)).toEqual(["error", "close"]);
  });

  it("acks and leaves at once on GoAway, and follows its reason", () => {
    const s = opened();
    s.handleFrame(1, deliver(1));
    s.handleFrame(2, goAway(GoAwayReason.DRAIN, 3_000));
    // Ack, then leave (Error 1000: the session stays resumable) without waiting for the server.
    expect(kinds(s)).toEqual(["ack", "error", "close"]);
    s.handleClosed(3);
    expect(events(s).at(-1)).toMatchObject({
      type: "disconnected",
      next: { kind: "reconnect", backoff: false, delayMs: 3_000, jitterMs: 3_000 },
    });
    // The drain's closing Error (4003) does not replace GoAway's delay.
    const drained = opened();
    drained.handleFrame(1, goAway(GoAwayReason.OVERLOAD, 500));
    drained.handleFrame(2, error(ErrorCode.GOING_AWAY));
    expect(kinds(drained)).toEqual(["error", "close"]);
    drained.handleClosed(3);
    expect(events(drained).at(-1)).toMatchObject({ next: { kind: "reconnect", backoff: false, delayMs: 500 } });
    const kicked = opened();
    kicked.handleFrame(1, goAway(GoAwayReason.KICKED));
    expect(kinds(kicked)).toEqual(["close"]);
    kicked.handleClosed(2);
    expect(events(kicked).at(-1)).toMatchObject({ next: { kind: "stop" } });
    expect(kicked.isStopped).toBe(true);
  });

  it("closes after an Error frame and forgets the session after a takeover (4001)", () => {
    const s = opened();
    s.handleFrame(1, error(ErrorCode.SESSION_TAKEN_OVER));
    expect(kinds(s)).toEqual(["close"]);
    s.handleClosed(2);
    expect(events(s).at(-1)).toMatchObject({ next: { kind: "stop" } });
    expect(s.resumeState).toBeUndefined();
  });

  it("forgets the session after GoAway{takeover}: the newer connection owns it", () => {
    const s = opened();
    s.handleFrame(1, goAway(GoAwayReason.TAKEOVER));
    s.handleClosed(2);
    expect(events(s).at(-1)).toMatchObject({ next: { kind: "stop" } });
    expect(s.resumeState).toBeUndefined();
  });

  it("logs out with Error 4004 and waits for the server's close", () => {
    const s = opened();
    send(s, 1);
    drain(s);
    s.logout(2);
    const [frame, ...rest] = drain(s);
    expect(frame?.kind === "frame" && frame.frame.kind.case === "error" && frame.frame.kind.value.code).toBe(
      ErrorCode.LOGGED_OUT,
    );
    expect(rest).toEqual([]);
    s.handleClosed(3);
    expect(events(s).at(-1)).toMatchObject({ cause: { kind: "loggedOut" }, next: { kind: "stop" } });
    expect([s.resumeState, s.unreceipted]).toEqual([undefined, 0]);
  });

  it("closes normally with Error 1000 and keeps the session", () => {
    const s = opened();
    s.closeNormally(1);
    const [frame, close] = drain(s);
    expect(frame?.kind === "frame" && frame.frame.kind.case === "error" && frame.frame.kind.value.code).toBe(
      ErrorCode.NORMAL,
    );
    expect(close).toEqual({ kind: "close" });
    expect(s.resumeState?.sessionId).toBe(7n);
  });

  it("refuses a frame that is not Welcome before Welcome", () => {
    const s = session();
    s.connected(0, "tok");
    drain(s);
    s.handleFrame(1, deliver(1));
    expect(kinds(s)).toEqual(["error", "close"]);
    expect(events(s)).toEqual([]);
  });
});

describe("nextAfter (§13: which errors reconnect)", () => {
  const cases: [number, string][] = [
    [ErrorCode.HANDSHAKE_TIMEOUT, "reconnect"],
    [ErrorCode.HEARTBEAT_TIMEOUT, "reconnect"],
    [ErrorCode.RATE_LIMITED, "reconnect"],
    [ErrorCode.SLOW_CONSUMER, "reconnect"],
    [3999, "reconnect"],
    [ErrorCode.GOING_AWAY, "reconnect"],
    [ErrorCode.INTERNAL, "reconnect"],
    [ErrorCode.UNAUTHENTICATED, "refreshToken"],
    [ErrorCode.TOKEN_EXPIRED, "refreshToken"],
    [ErrorCode.FORBIDDEN, "stop"],
    [ErrorCode.UNKNOWN_APP, "stop"],
    [ErrorCode.PROTOCOL_ERROR, "stop"],
    [ErrorCode.SESSION_TAKEN_OVER, "stop"],
    [ErrorCode.KICKED, "stop"],
  ];
  for (const [code, kind] of cases) {
    it(`${code} → ${kind}`, () => expect(nextAfter({ kind: "error", code, message: "" }).kind).toBe(kind));
  }
});
