// @imgate/client: a client for the imgate wire protocol v1 (docs/protocol.md), for browsers
// and Node. `ImgateClient` is the entry point; the rest is exported for custom transports,
// tests and tools.

export { BACKOFF_DEFAULTS, Backoff, type BackoffConfig } from "./backoff.js";
export {
  ImgateClient,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type ClientStats,
  type Clock,
  type StopCause,
  type Target,
  type TokenProvider,
  type TokenRequest,
} from "./client.js";
export {
  BUILTIN_DICTIONARY_ID,
  BUILTIN_DICTIONARY_SHA256,
  type Dictionary,
  builtinDictionary,
  dictionary,
  dictionaryId,
  verifiedBuiltinDictionary,
} from "./dictionary.js";
export { type Environment, type EnvironmentHandlers, browserEnvironment } from "./environment.js";
export { ErrorCode, ImgateError, errorName } from "./errors.js";
export { Emitter } from "./events.js";
export { type FallbackOptions, FallbackTransport } from "./fallback.js";
export {
  DEFAULT_MAX_FRAME,
  type DecodeLimits,
  FLAG_DICTIONARY,
  FLAG_LZ4,
  HANDSHAKE_LIMITS,
  StreamDeframer,
  decodeMessage,
  encodeMessage,
  lengthPrefixed,
} from "./framing.js";
export * from "./gen/imgate/v1/frame_pb.js";
export { CONNECTION_HEADER, type FetchLike, type HttpStreamOptions, HttpStreamTransport } from "./http.js";
export { Lz4Error, decompressBlock } from "./lz4.js";
export {
  type CloseCause,
  type Next,
  type Request,
  type ResumeState,
  SESSION_DEFAULTS,
  Session,
  type SessionConfig,
  type SessionEvent,
  type Transmit,
  nextAfter,
} from "./session.js";
export type { Transport, TransportConnection, TransportHandlers } from "./transport.js";
export { SUBPROTOCOL, type WebSocketConstructor, type WebSocketLike, WebSocketTransport } from "./websocket.js";
