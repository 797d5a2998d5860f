// Decode speed of compressed frames (LZ4 block + protobuf) on the vectors of test/vectors/lz4.txt.
// Run `npm run build` first: `node scripts/bench-decode.mjs`.
import { readFileSync } from "node:fs";
import { builtinDictionary, decodeMessage } from "../dist/index.js";

const lines = readFileSync(new URL("../test/vectors/lz4.txt", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => line !== "" && !line.startsWith("#"));
const limits = { maxFrame: 1 << 20, compression: true, dictionary: builtinDictionary() };
for (const name of ["chat-dict", "mixed-dict", "far-offsets-nodict"]) {
  const [, hex, length] = lines.find((line) => line.startsWith(`${name} `)).split(" ");
  const wire = Uint8Array.from(hex.match(/../g), (byte) => Number.parseInt(byte, 16));
  const rounds = Math.max(1_000, Math.floor(50e6 / Number(length)));
  for (let i = 0; i < 1_000; i++) decodeMessage(wire, limits);
  const start = performance.now();
  for (let i = 0; i < rounds; i++) decodeMessage(wire, limits);
  const ms = performance.now() - start;
  const perFrame = (ms * 1_000) / rounds;
  const mbPerSecond = (Number(length) * rounds) / ms / 1_000;
  console.log(`${name}: ${length} bytes out, ${perFrame.toFixed(2)} µs a frame, ${mbPerSecond.toFixed(0)} MB/s`);
}
