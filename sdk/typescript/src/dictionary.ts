// Shared compression dictionaries (docs/protocol.md §3.2): content-addressed ids and the
// built-in `im-v1` dictionary, embedded from codec/dict/im-v1.dict by scripts/generate.mjs.

import { IM_V1_DICT_BASE64 } from "./gen/im-v1-dict.js";

/** SHA-256 of `codec/dict/im-v1.dict` as docs/protocol.md §3.2 publishes it. */
export const BUILTIN_DICTIONARY_SHA256 = "6316caccf696129428a5dcb323e2cb9052bd507a1afa4b760dbb15f140830b0c";

/** LZ4 looks back at most 64 KiB: a longer dictionary is cut to its last 65 536 bytes. */
export const MAX_DICTIONARY_LEN = 65_536;

/** The id of the built-in dictionary, `im-v1` (the first four bytes of its SHA-256). */
export const BUILTIN_DICTIONARY_ID = 0x6316cacc;

/** A compression dictionary and its content-addressed id. */
export interface Dictionary {
  /** First four bytes of the SHA-256 of `bytes`, big-endian (0xFFFFFFFF if those are 0). */
  readonly id: number;
  /** The preset history, at most {@link MAX_DICTIONARY_LEN} bytes. */
  readonly bytes: Uint8Array;
}

function truncated(bytes: Uint8Array): Uint8Array {
  return bytes.length > MAX_DICTIONARY_LEN ? bytes.subarray(bytes.length - MAX_DICTIONARY_LEN) : bytes;
}

/** The id of `bytes` (§3.2), computed with WebCrypto (browsers in secure contexts, Node ≥ 20). */
export async function dictionaryId(bytes: Uint8Array): Promise<number> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(truncated(bytes))));
  const id = new DataView(digest.buffer).getUint32(0, false);
  return id === 0 ? 0xffffffff : id;
}

/** A dictionary of `bytes`, its id computed from its content. */
export async function dictionary(bytes: Uint8Array): Promise<Dictionary> {
  const content = truncated(bytes);
  return { id: await dictionaryId(content), bytes: content };
}

function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

let builtin: Dictionary | undefined;

/**
 * The built-in dictionary. Its hash is checked against the one the spec publishes by the
 * SDK's tests (and by {@link verifiedBuiltinDictionary} at run time where WebCrypto exists).
 */
export function builtinDictionary(): Dictionary {
  builtin ??= { id: BUILTIN_DICTIONARY_ID, bytes: decodeBase64(IM_V1_DICT_BASE64) };
  return builtin;
}

/**
 * The built-in dictionary once its SHA-256 matched the published one (§3.2: a client MUST
 * check the bytes it embeds); `undefined` when it does not match. Where WebCrypto is missing
 * (a page served over plain HTTP) the check of the SDK's own tests stands in for it.
 */
export async function verifiedBuiltinDictionary(): Promise<Dictionary | undefined> {
  const dict = builtinDictionary();
  if (globalThis.crypto?.subtle === undefined) return dict;
  let digest: Uint8Array;
  try {
    digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(dict.bytes)));
  } catch {
    // Cannot check it: do not announce it (frames then come without the dictionary).
    return undefined;
  }
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  return hex === BUILTIN_DICTIONARY_SHA256 ? dict : undefined;
}
