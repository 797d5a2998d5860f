// Frame builders for the sans-IO tests: the server's side of a conversation.

import { create } from "@bufbuild/protobuf";
import {
  DeliverSchema,
  ErrorSchema,
  type Frame,
  FrameSchema,
  GoAwayReason,
  GoAwaySchema,
  PongSchema,
  ReceiptSchema,
  ReceiptStatus,
  ResumeRefused,
  type Session,
  type Transmit,
  WelcomeSchema,
} from "../../src/index.js";

export function welcome(
  init: { resumed?: boolean; refused?: ResumeRefused; heartbeatMs?: number; sessionId?: bigint } = {},
): Frame {
  return create(FrameSchema, {
    kind: {
      case: "welcome",
      value: create(WelcomeSchema, {
        sessionId: init.sessionId ?? 7n,
        resumeSecret: new Uint8Array([1, 2, 3]),
        heartbeatMs: init.heartbeatMs ?? 1_000,
        maxFrame: 1 << 20,
        features: ["lz4"],
        resumed: init.resumed ?? false,
        resumeRefused: init.refused ?? ResumeRefused.UNSPECIFIED,
        userId: "bob",
      }),
    },
  });
}

export function deliver(seq: number, text = `m${seq}`): Frame {
  return create(FrameSchema, {
    kind: {
      case: "deliver",
      value: create(DeliverSchema, { seq: BigInt(seq), payload: new TextEncoder().encode(text) }),
    },
  });
}

export function receipt(msgId: bigint, status = ReceiptStatus.DELIVERED): Frame {
  return create(FrameSchema, { kind: { case: "receipt", value: create(ReceiptSchema, { msgId, status }) } });
}

export function error(code: number): Frame {
  return create(FrameSchema, { kind: { case: "error", value: create(ErrorSchema, { code, message: "test" }) } });
}

export function goAway(reason: GoAwayReason, reconnectAfterMs = 0): Frame {
  return create(FrameSchema, { kind: { case: "goAway", value: create(GoAwaySchema, { reason, reconnectAfterMs }) } });
}

export function pong(clientTimeMs: number, serverTimeMs: number): Frame {
  return create(FrameSchema, {
    kind: {
      case: "pong",
      value: create(PongSchema, { clientTimeMs: BigInt(clientTimeMs), serverTimeMs: BigInt(serverTimeMs) }),
    },
  });
}

/** Everything the session wants to transmit now. */
export function drain(session: Session): Transmit[] {
  const out: Transmit[] = [];
  for (let t = session.pollTransmit(); t; t = session.pollTransmit()) out.push(t);
  return out;
}

/** The kinds of what it transmits (`close` for a close). */
export function kinds(session: Session): string[] {
  return drain(session).map((t) => (t.kind === "close" ? "close" : (t.frame.kind.case ?? "none")));
}
