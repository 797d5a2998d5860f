// docs/protocol.md §14, read from the spec itself: every uncompressed vector is what this SDK
// encodes, byte for byte, and every vector (the LZ4 ones included) decodes to its frame. The
// same blocks are checked against the Rust codec by codec/tests/spec_vectors.rs.

import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  DeliverSchema,
  type Frame,
  FrameSchema,
  HelloSchema,
  PingSchema,
  Platform,
  ReceiptSchema,
  ReceiptStatus,
  ResumeSchema,
  StreamDeframer,
  dictionary,
  decodeMessage,
  encodeMessage,
  lengthPrefixed,
} from "../src/index.js";
import { fromHex, toHex } from "./support/hex.js";

const SPEC = readFileSync(new URL("../../../docs/protocol.md", import.meta.url), "utf8");

/** The bytes of the first fenced block after `<!-- vector: NAME -->`. */
function specBlock(name: string): Uint8Array {
  const marker = `<!-- vector: ${name} -->`;
  const at = SPEC.indexOf(marker);
  expect(at, `vector ${name} in docs/protocol.md`).toBeGreaterThan(0);
  const block = /```text\n([\s\S]*?)```/.exec(SPEC.slice(at + marker.length));
  return fromHex(block![1]!);
}

const chat = new TextEncoder().encode('{"type":"text","text":"hello hello hello hello hello hello hello hello"}');
const deliver = create(FrameSchema, {
  kind: {
    case: "deliver",
    value: create(DeliverSchema, { seq: 1n, payload: new TextEncoder().encode("hi"), from: "alice", messageId: 1001n }),
  },
});

const vectors: { name: string; stream: boolean; frame: Frame; compressed?: boolean }[] = [
  {
    name: "ping-stream",
    stream: true,
    frame: create(FrameSchema, {
      kind: { case: "ping", value: create(PingSchema, { clientTimeMs: 1_700_000_000_000n, ack: 41n }) },
    }),
  },
  {
    name: "hello-stream",
    stream: true,
    frame: create(FrameSchema, {
      kind: {
        case: "hello",
        value: create(HelloSchema, {
          version: 1,
          token: "t0k",
          appId: "chat",
          deviceId: "d1",
          platform: Platform.ANDROID,
          features: ["lz4"],
          resume: create(ResumeSchema, { sessionId: 7n, resumeSecret: new Uint8Array([0xaa, 0xbb]), lastSeq: 12n }),
          dictionaries: [0xab1d61a8],
        }),
      },
    }),
  },
  { name: "deliver-stream", stream: true, frame: deliver },
  { name: "deliver-websocket", stream: false, frame: deliver },
  {
    name: "receipt-websocket",
    stream: false,
    frame: create(FrameSchema, {
      kind: {
        case: "receipt",
        value: create(ReceiptSchema, {
          msgId: 5n,
          status: ReceiptStatus.REJECTED,
          reasonCode: 4101,
          reason: "no such user",
        }),
      },
    }),
  },
  {
    name: "deliver-lz4-stream",
    stream: true,
    compressed: true,
    frame: create(FrameSchema, { kind: { case: "deliver", value: create(DeliverSchema, { seq: 2n, payload: chat }) } }),
  },
  {
    name: "deliver-lz4-dictionary-websocket",
    stream: false,
    compressed: true,
    frame: create(FrameSchema, { kind: { case: "deliver", value: create(DeliverSchema, { seq: 3n, payload: chat }) } }),
  },
];

describe("docs/protocol.md §14 test vectors", async () => {
  // The spec's example dictionary (§3.2): its id is content-addressed, 0xab1d61a8.
  const example = await dictionary(new TextEncoder().encode('{"type":"text","text":'));
  const limits = { maxFrame: 1 << 20, compression: true, dictionary: example };

  it("derives the example dictionary's id from its SHA-256", () => {
    expect(example.id).toBe(0xab1d61a8);
  });

  for (const vector of vectors) {
    const wire = specBlock(vector.name);
    const message = () => (vector.stream ? new StreamDeframer(() => 1 << 20).push(wire) : [wire]);

    if (!vector.compressed) {
      it(`encodes ${vector.name} byte for byte`, () => {
        const encoded = encodeMessage(vector.frame);
        expect(toHex(vector.stream ? lengthPrefixed(encoded) : encoded)).toBe(toHex(wire));
      });
    }

    it(`decodes ${vector.name} to its frame`, () => {
      const messages = message();
      expect(messages).toHaveLength(1);
      const decoded = decodeMessage(messages[0]!, limits);
      expect(toHex(encodeMessage(decoded))).toBe(toHex(encodeMessage(vector.frame)));
      expect(decoded.kind.case).toBe(vector.frame.kind.case);
    });
  }
});
