// Reconnect delays: exponential back-off with jitter, so that clients dropped together do not
// come back together.

/** Settings of {@link Backoff}. */
export interface BackoffConfig {
  /** The first delay, milliseconds. */
  initialMs: number;
  /** The largest delay, milliseconds. */
  maxMs: number;
  /** Growth per failed attempt. */
  multiplier: number;
}

/** Defaults: 0.5 s, doubling, at most 30 s. */
export const BACKOFF_DEFAULTS: BackoffConfig = { initialMs: 500, maxMs: 30_000, multiplier: 2 };

/**
 * Delays for consecutive failed attempts: the n-th is uniform in [d/2, d] with
 * d = min(maxMs, initialMs · multiplier^n) ("equal jitter": never 0, never above the cap).
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly config: BackoffConfig,
    private readonly random: () => number,
  ) {}

  /** The delay before the next attempt; each call counts one more failure. */
  next(): number {
    const ceiling = Math.min(this.config.maxMs, this.config.initialMs * this.config.multiplier ** this.attempt);
    this.attempt++;
    return ceiling / 2 + this.random() * (ceiling / 2);
  }

  /** A connection succeeded: start again from the first delay. */
  reset(): void {
    this.attempt = 0;
  }
}
