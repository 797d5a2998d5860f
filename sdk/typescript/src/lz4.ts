// LZ4 *block* decompression with a preset dictionary (docs/protocol.md §3.1, step 4), as
// `LZ4_decompress_safe_usingDict` does. No maintained JavaScript library decodes raw blocks
// with a dictionary, so this is the small decoder by hand; test/lz4.test.ts checks it against
// blocks from the server's own encoder (codec/tests/sdk_vectors.rs).

/** A corrupt block: the caller answers `1005 COMPRESSION_ERROR`. */
export class Lz4Error extends Error {
  constructor(message: string) {
    super(`corrupt LZ4 block: ${message}`);
    this.name = "Lz4Error";
  }
}

const MIN_MATCH = 4;

/**
 * Decompresses `block` into exactly `size` bytes, with `dictionary` as the history before the
 * output. Throws {@link Lz4Error} on a truncated or corrupt block, a match reaching before the
 * history, or an output of another length than `size`. Never writes beyond `size` bytes.
 */
export function decompressBlock(
  block: Uint8Array,
  size: number,
  dictionary: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(size);
  const end = block.length;
  let ip = 0;
  let op = 0;
  const readLength = (base: number): number => {
    let length = base;
    if (base !== 15) return length;
    for (;;) {
      if (ip >= end) throw new Lz4Error("truncated length");
      const byte = block[ip++]!;
      length += byte;
      if (byte !== 255) return length;
    }
  };
  while (ip < end) {
    const token = block[ip++]!;
    const literals = readLength(token >>> 4);
    if (literals > end - ip) throw new Lz4Error("literals beyond the block");
    if (literals > size - op) throw new Lz4Error("output larger than declared");
    out.set(block.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    // The last sequence has literals only.
    if (ip === end) break;
    if (end - ip < 2) throw new Lz4Error("truncated offset");
    const offset = block[ip]! | (block[ip + 1]! << 8);
    ip += 2;
    if (offset === 0) throw new Lz4Error("offset 0");
    const length = readLength(token & 0x0f) + MIN_MATCH;
    if (length > size - op) throw new Lz4Error("output larger than declared");
    let from = op - offset;
    if (from < -dictionary.length) throw new Lz4Error("match before the start of the history");
    let left = length;
    // The part of the match inside the dictionary (offsets reaching before the output).
    while (from < 0 && left > 0) {
      out[op++] = dictionary[dictionary.length + from]!;
      from++;
      left--;
    }
    if (offset >= left) {
      out.copyWithin(op, from, from + left);
      op += left;
    } else {
      // Overlapping copy (e.g. offset 1 repeats one byte): byte by byte, in order.
      for (; left > 0; left--) out[op++] = out[from++]!;
    }
  }
  if (op !== size) throw new Lz4Error(`produced ${op} bytes, declared ${size}`);
  return out;
}
