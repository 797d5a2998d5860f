// Bad input a receiver must refuse with the code of docs/protocol.md §2–§3 and §13.

import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  BUILTIN_DICTIONARY_ID,
  BUILTIN_DICTIONARY_SHA256,
  type DecodeLimits,
  ErrorCode,
  HANDSHAKE_LIMITS,
  ImgateError,
  StreamDeframer,
  builtinDictionary,
  decodeMessage,
  dictionaryId,
  verifiedBuiltinDictionary,
} from "../src/index.js";
import { fromHex } from "./support/hex.js";

const open: DecodeLimits = { maxFrame: 1024, compression: true, dictionary: builtinDictionary() };

function codeOf(action: () => unknown): number | undefined {
  try {
    action();
  } catch (error) {
    if (error instanceof ImgateError) return error.code;
    throw error;
  }
  return undefined;
}

describe("decodeMessage refuses", () => {
  const cases: [string, string, DecodeLimits, number][] = [
    ["an empty message", "", open, ErrorCode.PROTOCOL_ERROR],
    ["a reserved flag bit", "04 22 00", open, ErrorCode.PROTOCOL_ERROR],
    ["the dictionary bit without LZ4", "02 22 00", open, ErrorCode.PROTOCOL_ERROR],
    ["a truncated size header", "01 4e 00", open, ErrorCode.PROTOCOL_ERROR],
    ["a truncated dictionary header", "03 63 16 ca cc 4e", open, ErrorCode.PROTOCOL_ERROR],
    ["invalid protobuf", "00 22 09 08", open, ErrorCode.PROTOCOL_ERROR],
    ["a frame without a kind (empty body)", "00", open, ErrorCode.PROTOCOL_ERROR],
    ["a kind this version does not know (field 99)", "00 9a 06 00", open, ErrorCode.PROTOCOL_ERROR],
    ["compression before Welcome", "01 04 00 00 00 40 22 00 08 01", HANDSHAKE_LIMITS, ErrorCode.COMPRESSION_ERROR],
    ["a dictionary not negotiated", "03 ab 1d 61 a8 04 00 00 00 40 22 00 08 01", open, ErrorCode.COMPRESSION_ERROR],
    ["dictionary id 0", "03 00 00 00 00 04 00 00 00 40 22 00 08 01", open, ErrorCode.COMPRESSION_ERROR],
    ["a declared size above the limit (a bomb)", "01 00 04 00 00 1f 00 01 00", open, ErrorCode.COMPRESSION_ERROR],
    ["a corrupt block", "01 08 00 00 00 1f 00 09 00", open, ErrorCode.COMPRESSION_ERROR],
  ];
  for (const [what, hex, limits, code] of cases) {
    it(what, () => expect(codeOf(() => decodeMessage(fromHex(hex), limits))).toBe(code));
  }

  it("a message above the frame limit", () => {
    const big = new Uint8Array(1025);
    expect(codeOf(() => decodeMessage(big, open))).toBe(ErrorCode.FRAME_TOO_LARGE);
  });
});

describe("StreamDeframer", () => {
  it("splits frames across and within chunks", () => {
    const deframer = new StreamDeframer(() => 1024);
    const wire = fromHex("00 00 00 02 00 aa 00 00 00 01 00");
    expect(deframer.push(wire.subarray(0, 3))).toEqual([]);
    expect(deframer.push(wire.subarray(3, 7)).map((m) => [...m])).toEqual([[0x00, 0xaa]]);
    expect(deframer.pending).toBe(1);
    expect(deframer.push(wire.subarray(7)).map((m) => [...m])).toEqual([[0x00]]);
    expect(deframer.pending).toBe(0);
  });

  it("refuses length 0 and a length above the limit as soon as the prefix is read", () => {
    expect(codeOf(() => new StreamDeframer(() => 1024).push(fromHex("00 00 00 00")))).toBe(ErrorCode.PROTOCOL_ERROR);
    expect(codeOf(() => new StreamDeframer(() => 1024).push(fromHex("00 00 04 01")))).toBe(ErrorCode.FRAME_TOO_LARGE);
  });
});

describe("the built-in dictionary", () => {
  const file = readFileSync(new URL("../../../codec/dict/im-v1.dict", import.meta.url));

  it("embeds exactly codec/dict/im-v1.dict, whose hash the spec publishes", () => {
    expect(Buffer.from(builtinDictionary().bytes).equals(file)).toBe(true);
    expect(createHash("sha256").update(file).digest("hex")).toBe(BUILTIN_DICTIONARY_SHA256);
    expect(readFileSync(new URL("../../../docs/protocol.md", import.meta.url), "utf8")).toContain(
      BUILTIN_DICTIONARY_SHA256,
    );
  });

  it("has the content-addressed id 0x6316cacc and passes the run-time check", async () => {
    expect(await dictionaryId(builtinDictionary().bytes)).toBe(BUILTIN_DICTIONARY_ID);
    expect(BUILTIN_DICTIONARY_ID).toBe(0x6316cacc);
    expect(await verifiedBuiltinDictionary()).toBe(builtinDictionary());
  });
});
