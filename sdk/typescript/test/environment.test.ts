// browserEnvironment() reads the browser's globals where they exist, and nothing in Node.

import { afterEach, describe, expect, it, vi } from "vitest";
import { browserEnvironment } from "../src/index.js";

afterEach(() => vi.unstubAllGlobals());

describe("browserEnvironment", () => {
  it("is undefined without a window (Node)", () => {
    expect(browserEnvironment()).toBeUndefined();
  });

  it("follows online/offline on window and visibilitychange on document", () => {
    const window = new EventTarget();
    const document = Object.assign(new EventTarget(), { visibilityState: "hidden" });
    const navigator = { onLine: false };
    vi.stubGlobal("window", window);
    vi.stubGlobal("document", document);
    vi.stubGlobal("navigator", navigator);
    const environment = browserEnvironment()!;
    expect(environment.isOnline()).toBe(false);
    navigator.onLine = true;
    expect(environment.isOnline()).toBe(true);

    const seen: string[] = [];
    const stop = environment.subscribe({
      online: () => seen.push("online"),
      offline: () => seen.push("offline"),
      visible: () => seen.push("visible"),
    });
    window.dispatchEvent(new Event("offline"));
    window.dispatchEvent(new Event("online"));
    document.dispatchEvent(new Event("visibilitychange"));
    document.visibilityState = "visible";
    document.dispatchEvent(new Event("visibilitychange"));
    stop();
    window.dispatchEvent(new Event("online"));
    expect(seen).toEqual(["offline", "online", "visible"]);
  });
});
