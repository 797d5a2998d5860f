// Error codes of docs/protocol.md §13 and the errors this SDK raises.

/** The stable error codes of the protocol (docs/protocol.md §13). */
export const ErrorCode = {
  NORMAL: 1000,
  PROTOCOL_ERROR: 1001,
  FRAME_TOO_LARGE: 1002,
  UNSUPPORTED_VERSION: 1003,
  UNEXPECTED_FRAME: 1004,
  COMPRESSION_ERROR: 1005,
  HANDSHAKE_TIMEOUT: 1006,
  HEARTBEAT_TIMEOUT: 1007,
  UNSUPPORTED_DATA: 1008,
  UNAUTHENTICATED: 2001,
  TOKEN_EXPIRED: 2002,
  FORBIDDEN: 2003,
  UNKNOWN_APP: 2004,
  RATE_LIMITED: 3001,
  CONNECTION_LIMIT: 3002,
  SLOW_CONSUMER: 3003,
  OVERLOADED: 3004,
  SESSION_TAKEN_OVER: 4001,
  KICKED: 4002,
  GOING_AWAY: 4003,
  LOGGED_OUT: 4004,
  INVALID_TARGET: 4101,
  BACKEND_REJECTED: 4102,
  BACKEND_UNAVAILABLE: 4103,
  OFFLINE_QUEUE_FULL: 4104,
  INTERNAL: 5000,
} as const;

const NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** The name of `code` (e.g. `TOKEN_EXPIRED`), or `UNKNOWN` for a code of a later version. */
export function errorName(code: number): string {
  return NAMES.get(code) ?? "UNKNOWN";
}

/** An error with a protocol error code: a fatal `Error` frame, or a local protocol violation. */
export class ImgateError extends Error {
  /** The protocol error code (§13). */
  readonly code: number;

  constructor(code: number, message: string) {
    super(`${errorName(code)}(${code}): ${message}`);
    this.name = "ImgateError";
    this.code = code;
  }
}
