// The WebSocket transport (docs/protocol.md §1, §2.2): subprotocol `imgate.v1`, one frame per
// binary message. Works with the browser's `WebSocket` and with Node's `ws` package.

import { ErrorCode } from "./errors.js";
import type { Transport, TransportConnection, TransportHandlers } from "./transport.js";

/** The WebSocket subprotocol of protocol version 1. */
export const SUBPROTOCOL = "imgate.v1";

/** The part of the WHATWG `WebSocket` this transport uses (the browser's, or `ws`'s). */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/**
 * A `WebSocket` constructor: `globalThis.WebSocket` in browsers, `ws`'s `WebSocket` in Node.
 * Typed loosely so both fit without a cast (their event types differ in details this
 * transport does not read); instances are used as {@link WebSocketLike}.
 */
export type WebSocketConstructor = new (url: string, protocols: string) => unknown;

/** Connects to `url` (e.g. `wss://chat.example.com/ws`, the listener's configured path). */
export class WebSocketTransport implements Transport {
  readonly name = "websocket";

  constructor(
    private readonly url: string,
    private readonly WebSocketImpl: WebSocketConstructor,
  ) {}

  connect(handlers: TransportHandlers): TransportConnection {
    const socket = new this.WebSocketImpl(this.url, SUBPROTOCOL) as WebSocketLike;
    socket.binaryType = "arraybuffer";
    let closed = false;
    const finish = (detail: string): void => {
      if (closed) return;
      closed = true;
      socket.onopen = socket.onmessage = socket.onclose = null;
      // Keep a listener: `ws` throws an 'error' event nobody listens to (e.g. closing while
      // still connecting).
      socket.onerror = () => {};
      handlers.onClose(detail);
    };
    socket.onopen = () => {
      if (socket.protocol !== SUBPROTOCOL) {
        socket.close(1002, "subprotocol imgate.v1 not selected");
        return finish(`server selected subprotocol "${socket.protocol}"`);
      }
      handlers.onOpen();
    };
    socket.onmessage = ({ data }) => {
      if (closed) return;
      if (data instanceof ArrayBuffer) return handlers.onFrame(new Uint8Array(data));
      if (ArrayBuffer.isView(data)) {
        return handlers.onFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
      handlers.onInvalid(ErrorCode.UNSUPPORTED_DATA, "text message");
    };
    socket.onclose = ({ code, reason }) => finish(`closed ${code} ${reason}`);
    // An error is always followed by a close in the WHATWG API; `ws` may not, so finish here.
    socket.onerror = () => {
      finish("socket error");
      try {
        socket.close();
      } catch {
        // Already closing.
      }
    };
    return {
      send: (frame) => {
        if (!closed) socket.send(frame);
      },
      close: () => {
        if (closed) return;
        socket.close(1000);
        // Do not wait for the closing handshake of a dead peer.
        finish("closed by the client");
      },
    };
  }
}
