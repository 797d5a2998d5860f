// Waiting for events, bounded: a test never sleeps, it waits for what it expects.

import type { ClientEvents, ImgateClient } from "../../src/index.js";

/** The next `type` event of `client` for which `accept` holds; fails after `ms`. */
export function next<K extends keyof ClientEvents>(
  client: ImgateClient,
  type: K,
  accept: (payload: ClientEvents[K]) => boolean = () => true,
  ms = 10_000,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${String(type)} event in ${ms} ms`));
    }, ms);
    const off = client.on(type, (payload) => {
      if (!accept(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Resolves when `condition()` holds after some `type` event; fails after `ms`. */
export function until<K extends keyof ClientEvents>(
  client: ImgateClient,
  type: K,
  condition: () => boolean,
  ms = 10_000,
): Promise<void> {
  if (condition()) return Promise.resolve();
  return next(client, type, () => condition(), ms).then(() => undefined);
}
