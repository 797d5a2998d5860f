// What the client learns from its surroundings: whether the device is online, and when a page
// becomes visible again. Browsers tell through `online`/`offline` and `visibilitychange`;
// Node has neither, so there the client relies on heartbeats alone.

/** Notifications from the environment; each method is optional to call. */
export interface EnvironmentHandlers {
  /** The device has a network again: reconnect now rather than after the back-off. */
  online(): void;
  /** The device lost its network: the connection is dead even if the socket does not know. */
  offline(): void;
  /** The page became visible (timers may have been frozen while hidden): check the link. */
  visible(): void;
}

/** The source of {@link EnvironmentHandlers} notifications. */
export interface Environment {
  /** False when the device is known to be offline (then the client waits for `online`). */
  isOnline(): boolean;
  /** Starts notifying `handlers`; returns a function that stops it. */
  subscribe(handlers: EnvironmentHandlers): () => void;
}

interface Listenable {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

function isListenable(value: unknown): value is Listenable {
  return typeof (value as Listenable | undefined)?.addEventListener === "function";
}

/**
 * The browser's environment (`window` events, `navigator.onLine`, `document.visibilityState`),
 * or `undefined` where those globals do not exist (Node, workers without `document`).
 */
export function browserEnvironment(): Environment | undefined {
  const scope = globalThis as { window?: unknown; document?: unknown; navigator?: { onLine?: boolean } };
  const target = scope.window;
  if (!isListenable(target)) return undefined;
  const doc = isListenable(scope.document) ? (scope.document as Listenable & { visibilityState?: string }) : undefined;
  return {
    isOnline: () => scope.navigator?.onLine !== false,
    subscribe(handlers) {
      const online = () => handlers.online();
      const offline = () => handlers.offline();
      const visibility = () => {
        if (doc?.visibilityState === "visible") handlers.visible();
      };
      target.addEventListener("online", online);
      target.addEventListener("offline", offline);
      doc?.addEventListener("visibilitychange", visibility);
      return () => {
        target.removeEventListener("online", online);
        target.removeEventListener("offline", offline);
        doc?.removeEventListener("visibilitychange", visibility);
      };
    },
  };
}
