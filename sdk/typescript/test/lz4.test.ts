// The hand-written LZ4 block decoder against blocks from the server's own encoder
// (test/vectors/lz4.txt, written and checked by codec/tests/sdk_vectors.rs), and against
// corrupt blocks, which must fail without writing past the declared size.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  BUILTIN_DICTIONARY_ID,
  Lz4Error,
  builtinDictionary,
  decodeMessage,
  decompressBlock,
  encodeMessage,
} from "../src/index.js";
import { fromHex } from "./support/hex.js";

const lines = readFileSync(new URL("./vectors/lz4.txt", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => line !== "" && !line.startsWith("#"));

describe("LZ4 vectors of the Rust codec", () => {
  const limits = { maxFrame: 1 << 20, compression: true, dictionary: builtinDictionary() };

  it("has vectors with and without the built-in dictionary", () => {
    expect(lines.filter((l) => l.includes("-dict ")).length).toBeGreaterThanOrEqual(5);
    expect(lines.filter((l) => l.includes("-nodict ")).length).toBeGreaterThanOrEqual(5);
  });

  for (const line of lines) {
    const [name, message, length, sha256] = line.split(" ") as [string, string, string, string];
    it(`decompresses ${name} byte for byte`, () => {
      const wire = fromHex(message);
      const dict = name.endsWith("-dict");
      expect(wire[0]).toBe(dict ? 0x03 : 0x01);
      if (dict) expect(new DataView(wire.buffer).getUint32(1, false)).toBe(BUILTIN_DICTIONARY_ID);
      const frame = decodeMessage(wire, limits);
      const body = encodeMessage(frame).subarray(1);
      expect(body.length).toBe(Number(length));
      expect(createHash("sha256").update(body).digest("hex")).toBe(sha256);
    });
  }
});

describe("decompressBlock", () => {
  it("copies overlapping matches byte by byte (offset 1 repeats a byte)", () => {
    // token 0x1f: 1 literal 'a', match of 15+4+1=20 at offset 1; then 0x10: 1 literal 'b'.
    const block = new Uint8Array([0x1f, 0x61, 0x01, 0x00, 0x01, 0x10, 0x62]);
    expect(new TextDecoder().decode(decompressBlock(block, 22))).toBe(`${"a".repeat(21)}b`);
  });

  it("takes matches from the dictionary as history", () => {
    // 0 literals, match of 4 at offset 3 (all in the dictionary "xyz"), then literal '!'.
    const block = new Uint8Array([0x00, 0x03, 0x00, 0x10, 0x21]);
    const out = decompressBlock(block, 5, new TextEncoder().encode("xyz"));
    expect(new TextDecoder().decode(out)).toBe("xyzx!");
  });

  const corrupt: [string, number[], number][] = [
    ["a match before the start of the history", [0x10, 0x61, 0x05, 0x00], 10],
    ["offset 0", [0x10, 0x61, 0x00, 0x00], 10],
    ["literals beyond the block", [0x50, 0x61], 5],
    ["a truncated offset", [0x10, 0x61, 0x01], 10],
    ["a truncated length", [0xf0, 0xff], 300],
    ["more output than declared", [0x50, 0x61, 0x62, 0x63, 0x64, 0x65], 4],
    ["less output than declared", [0x10, 0x61], 2],
    ["a match past the declared size", [0x1f, 0x61, 0x01, 0x00, 0x00], 10],
  ];
  for (const [what, bytes, size] of corrupt) {
    it(`refuses ${what}`, () => {
      expect(() => decompressBlock(new Uint8Array(bytes), size)).toThrow(Lz4Error);
    });
  }
});
