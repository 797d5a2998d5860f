// The HTTP fallback transport (docs/protocol.md §1.1), for networks that block WebSocket:
// `POST {url}` opens a connection whose response streams the server's frames (read with
// `fetch`'s streaming body, in browsers and in Node ≥ 20), `POST {url}/send` carries the
// client's frames, one POST at a time, and `POST {url}/close` ends them. The open carries
// the first frames (the `Hello`), so connecting takes one round trip, as on WebSocket.

import { ImgateError } from "./errors.js";
import { DEFAULT_MAX_FRAME, LENGTH_PREFIX_LEN, StreamDeframer, lengthPrefixed } from "./framing.js";
import type { Transport, TransportConnection, TransportHandlers } from "./transport.js";

/** The header that names a connection (§1.1). */
export const CONNECTION_HEADER = "imgate-connection";

/** How long the stream may still deliver its last frames after a POST failed. */
const STREAM_GRACE_MS = 2_000;

/** The part of the WHATWG `fetch` this transport uses. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Settings of an {@link HttpStreamTransport}. */
export interface HttpStreamOptions {
  /** `fetch`; default `globalThis.fetch` (browsers, Node ≥ 18). */
  fetch?: FetchLike;
  /** Largest POST body: the server's frame limit + 4 (default 1 MiB + 4). */
  maxPostBytes?: number;
}

/**
 * Connects to `url`, the listener's base path (e.g. `https://chat.example.com/imgate`).
 * Credentials are never sent (`credentials: "omit"`): the token travels in `Hello`.
 */
export class HttpStreamTransport implements Transport {
  readonly name = "http";
  private readonly fetch: FetchLike;
  private readonly maxPostBytes: number;

  constructor(
    private readonly url: string,
    options: HttpStreamOptions = {},
  ) {
    const impl = options.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (impl === undefined) throw new TypeError("no global fetch: pass `fetch`");
    // Called unbound, `window.fetch` throws "Illegal invocation".
    this.fetch = (input, init) => impl.call(globalThis, input, init);
    this.maxPostBytes = options.maxPostBytes ?? DEFAULT_MAX_FRAME + LENGTH_PREFIX_LEN;
  }

  connect(handlers: TransportHandlers): TransportConnection {
    return new HttpConnection(this.url, this.fetch, this.maxPostBytes, handlers);
  }
}

/** One connection: the stream being read, and the frames waiting for their POST. */
class HttpConnection implements TransportConnection {
  private readonly abort = new AbortController();
  private id: string | undefined;
  /** Frames (length-prefixed) waiting for the next POST. */
  private queued: Uint8Array[] = [];
  /** The open request is out (or answered). */
  private opening = false;
  private posting = false;
  private closing = false;
  private closed = false;
  /** A POST failed: nothing more is sent; the stream is cut soon if it does not end. */
  private failed = false;

  constructor(
    private readonly url: string,
    private readonly fetch: FetchLike,
    private readonly maxPostBytes: number,
    private readonly handlers: TransportHandlers,
  ) {
    // Ready at once: the open goes with the first frames. (Not from inside `connect`,
    // whose caller has not stored the connection yet.)
    queueMicrotask(() => {
      if (!this.closed) this.handlers.onOpen();
    });
  }

  send(frame: Uint8Array): void {
    if (this.closed || this.closing || this.failed) return;
    this.queued.push(lengthPrefixed(frame));
    if (!this.opening) {
      this.opening = true;
      void this.open();
      return;
    }
    void this.post();
  }

  close(): void {
    if (this.closed) return;
    // What is queued still goes, then the close request; the stream is cut after that.
    this.closing = true;
    if (this.opening) void this.post();
    this.finish("closed by the client");
  }

  private finish(detail: string): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.closing) {
      this.queued = [];
      this.abort.abort();
    }
    this.handlers.onClose(detail);
  }

  /** Opens the connection with the queued frames, then reads its stream to the end. */
  private async open(): Promise<void> {
    let response: Response;
    try {
      response = await this.fetch(this.url, {
        method: "POST",
        credentials: "omit",
        cache: "no-store",
        // No custom header: a CORS "simple" request, so no preflight before the first frame.
        body: this.take(),
        signal: this.abort.signal,
      });
    } catch (error) {
      return this.finish(`open failed: ${String(error)}`);
    }
    const id = response.headers.get(CONNECTION_HEADER);
    if (!response.ok || id === null || response.body === null) {
      // A refusal (e.g. 429) says why in an `Error` frame, its body: the client handles its
      // code (`3002`: back off) as on any transport.
      let refusal = new Uint8Array(0);
      try {
        refusal = new Uint8Array(await response.arrayBuffer());
      } catch {
        // No body to read.
      }
      try {
        for (const message of new StreamDeframer(() => DEFAULT_MAX_FRAME).push(refusal)) {
          if (!this.closed) this.handlers.onFrame(message);
        }
      } catch {
        // Not frames: the status is all there is.
      }
      return this.finish(`open refused: HTTP ${response.status}`);
    }
    this.id = id;
    if (this.closed && !this.closing) return this.cut();
    // Frames queued while the open was out, or the close request.
    void this.post();
    const deframer = new StreamDeframer(() => DEFAULT_MAX_FRAME);
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (this.closed) return;
        for (const message of deframer.push(value)) {
          if (this.closed) return;
          this.handlers.onFrame(message);
        }
      }
    } catch (error) {
      if (error instanceof ImgateError) {
        this.handlers.onInvalid(error.code, error.message);
        return this.finish(error.message);
      }
      return this.finish(`stream failed: ${String(error)}`);
    }
    this.finish(deframer.pending > 0 ? "stream ended inside a frame" : "stream ended");
  }

  /** Sends what is queued, one POST at a time (frames queued meanwhile go in the next);
   * then, when closing, the close request, and the stream is cut. */
  private async post(): Promise<void> {
    if (this.posting || this.id === undefined) return;
    this.posting = true;
    try {
      for (;;) {
        if (this.queued.length > 0) {
          const status = await this.request("/send", this.take());
          if (status !== 204) throw new Error(`answered ${status}`);
        } else if (this.closing) {
          await this.request("/close", new Uint8Array(0));
          break;
        } else {
          return;
        }
      }
    } catch (error) {
      // The connection is over. The stream says why (an `Error` as its last frame) if it
      // can: give it a moment before cutting it.
      this.queued = [];
      this.failed = true;
      const detail = `POST failed: ${String(error)}`;
      setTimeout(() => this.finish(detail), STREAM_GRACE_MS);
    } finally {
      this.posting = false;
    }
    if (this.closing) this.cut();
  }

  /** The queued frames that fit one POST. */
  private take(): Uint8Array<ArrayBuffer> {
    let size = 0;
    let count = 0;
    for (const frame of this.queued) {
      if (count > 0 && size + frame.length > this.maxPostBytes) break;
      size += frame.length;
      count++;
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const frame of this.queued.splice(0, count)) {
      body.set(frame, at);
      at += frame.length;
    }
    return body;
  }

  private async request(path: string, body: Uint8Array<ArrayBuffer>): Promise<number> {
    const response = await this.fetch(this.url + path, {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: { [CONNECTION_HEADER]: this.id ?? "", "content-type": "application/octet-stream" },
      body,
    });
    await response.body?.cancel();
    return response.status;
  }

  private cut(): void {
    this.abort.abort();
  }
}
