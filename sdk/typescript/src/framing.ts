// Frames on the wire (docs/protocol.md §2–§3): the flags byte, the protobuf body, LZ4 with an
// optional dictionary, and the length prefix of byte streams. Pure functions, no I/O.

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Dictionary } from "./dictionary.js";
import { ErrorCode, ImgateError } from "./errors.js";
import { type Frame, FrameSchema } from "./gen/imgate/v1/frame_pb.js";
import { Lz4Error, decompressBlock } from "./lz4.js";

/** Flags bit 0: the body is LZ4-compressed. */
export const FLAG_LZ4 = 0x01;
/** Flags bit 1: the LZ4 block used the negotiated dictionary (only with {@link FLAG_LZ4}). */
export const FLAG_DICTIONARY = 0x02;
/** Default and largest frame limit: 1 MiB (§12). */
export const DEFAULT_MAX_FRAME = 1_048_576;
/** Bytes of the big-endian length before each frame on a byte stream (§2.1). */
export const LENGTH_PREFIX_LEN = 4;

/** What the receiver accepts on this connection (§3.3, §12). */
export interface DecodeLimits {
  /** Largest frame length (flags byte + uncompressed body) accepted. */
  maxFrame: number;
  /** Whether `"lz4"` was in `Welcome.features`: compressed frames are refused before that. */
  compression: boolean;
  /** The dictionary of `Welcome.dictionary_id`, if any. */
  dictionary?: Dictionary | undefined;
}

/** The limits before `Welcome`: 1 MiB, nothing compressed. */
export const HANDSHAKE_LIMITS: DecodeLimits = { maxFrame: DEFAULT_MAX_FRAME, compression: false };

/** `frame` as one message (flags `0x00` and its protobuf body): a WebSocket binary message. */
export function encodeMessage(frame: Frame): Uint8Array {
  const body = toBinary(FrameSchema, frame);
  const message = new Uint8Array(1 + body.length);
  message.set(body, 1);
  return message;
}

/** `message` (flags byte and body) with the length prefix of byte streams (§2.1). */
export function lengthPrefixed(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(LENGTH_PREFIX_LEN + message.length);
  new DataView(out.buffer).setUint32(0, message.length, false);
  out.set(message, LENGTH_PREFIX_LEN);
  return out;
}

function compressionError(message: string): ImgateError {
  return new ImgateError(ErrorCode.COMPRESSION_ERROR, message);
}

function protocolError(message: string): ImgateError {
  return new ImgateError(ErrorCode.PROTOCOL_ERROR, message);
}

/** The protobuf body of a compressed frame, checked in the order of §3.1's receiver rules. */
function decompress(flags: number, body: Uint8Array, limits: DecodeLimits): Uint8Array {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const headers = flags & FLAG_DICTIONARY ? 8 : 4;
  if (body.length < headers) throw protocolError("truncated compression header");
  if (!limits.compression) throw compressionError("compression not enabled");
  let history: Uint8Array | undefined;
  if (flags & FLAG_DICTIONARY) {
    const id = view.getUint32(0, false);
    if (limits.dictionary === undefined || id !== limits.dictionary.id) {
      throw compressionError(`dictionary ${id.toString(16)} not negotiated`);
    }
    history = limits.dictionary.bytes;
  }
  const size = view.getUint32(headers - 4, true);
  if (size > limits.maxFrame - 1) throw compressionError(`declared size ${size} above the frame limit`);
  try {
    return decompressBlock(body.subarray(headers), size, history);
  } catch (error) {
    if (error instanceof Lz4Error) throw compressionError(error.message);
    throw error;
  }
}

/**
 * Decodes one message (flags byte and body, no length prefix) into a `Frame`. Throws an
 * {@link ImgateError} with the code the receiver answers (`1001`, `1002` or `1005`).
 */
export function decodeMessage(message: Uint8Array, limits: DecodeLimits): Frame {
  if (message.length === 0) throw protocolError("empty frame");
  if (message.length > limits.maxFrame) {
    throw new ImgateError(ErrorCode.FRAME_TOO_LARGE, `frame of ${message.length} bytes above ${limits.maxFrame}`);
  }
  const flags = message[0]!;
  if (flags & ~(FLAG_LZ4 | FLAG_DICTIONARY) || (flags & FLAG_DICTIONARY && !(flags & FLAG_LZ4))) {
    throw protocolError(`invalid flags 0x${flags.toString(16).padStart(2, "0")}`);
  }
  const raw = message.subarray(1);
  const body = flags & FLAG_LZ4 ? decompress(flags, raw, limits) : raw;
  let frame: Frame;
  try {
    frame = fromBinary(FrameSchema, body, { readUnknownFields: false });
  } catch {
    throw protocolError("invalid protobuf frame");
  }
  if (frame.kind.case === undefined) throw protocolError("frame without a kind");
  return frame;
}

/**
 * Splits a byte stream into messages (§2.1): feed it chunks as they arrive; it returns the
 * complete messages (flags byte and body) and keeps the partial one. The declared length is
 * checked against the limit before anything is buffered for it.
 */
export class StreamDeframer {
  private buffer = new Uint8Array(0);

  constructor(private readonly maxFrame: () => number) {}

  /** Appends `chunk`; the complete messages now available, in order. */
  push(chunk: Uint8Array): Uint8Array[] {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    const messages: Uint8Array[] = [];
    let at = 0;
    while (joined.length - at >= LENGTH_PREFIX_LEN) {
      const length = new DataView(joined.buffer, at, LENGTH_PREFIX_LEN).getUint32(0, false);
      if (length === 0) throw protocolError("frame of length 0");
      if (length > this.maxFrame()) {
        throw new ImgateError(ErrorCode.FRAME_TOO_LARGE, `frame of ${length} bytes above ${this.maxFrame()}`);
      }
      if (joined.length - at - LENGTH_PREFIX_LEN < length) break;
      messages.push(joined.slice(at + LENGTH_PREFIX_LEN, at + LENGTH_PREFIX_LEN + length));
      at += LENGTH_PREFIX_LEN + length;
    }
    this.buffer = joined.slice(at);
    return messages;
  }

  /** Bytes of a partial frame still waiting for the rest (a stream ending here is truncated). */
  get pending(): number {
    return this.buffer.length;
  }
}
