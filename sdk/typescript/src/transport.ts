// The carrier of frames under a `Client`. One frame is one message (flags byte and body): a
// WebSocket binary message (`websocket.ts`), or a length-prefixed frame inside the HTTP
// fallback's bodies (`http.ts`: one long response down, POSTs up); `fallback.ts` tries one,
// then the other.

/** Callbacks a transport calls; after `onClose` it calls none. */
export interface TransportHandlers {
  /** The carrier is up: frames may be sent. */
  onOpen(): void;
  /** One frame (flags byte and body) arrived. */
  onFrame(frame: Uint8Array): void;
  /**
   * The peer sent something that is not a frame of this carrier (a WebSocket text message):
   * the client answers `Error{code}` and closes.
   */
  onInvalid(code: number, message: string): void;
  /** The carrier closed or failed; `detail` is for logs only. */
  onClose(detail: string): void;
}

/** One connection of a transport. */
export interface TransportConnection {
  /** Sends one frame (flags byte and body), in order after the previous ones. */
  send(frame: Uint8Array): void;
  /** Closes the connection after the frames already sent; `onClose` follows. */
  close(): void;
}

/** A way to reach the server. */
export interface Transport {
  /** A short name for logs and events, e.g. `"websocket"`. */
  readonly name: string;
  /** Opens a connection; progress is reported through `handlers`. */
  connect(handlers: TransportHandlers): TransportConnection;
}
