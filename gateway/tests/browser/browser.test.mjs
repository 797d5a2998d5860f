// The demo chat page and the web console in headless Chromium (Debian's, driven by
// playwright-core) against the real `imgate` binary: two pages exchange messages; one goes
// offline while messages arrive and, back online, receives every one exactly once; the
// console shows a connected user, sends it a test message and kicks it, and shows a push in
// the push queue with the user's device and badge. Screenshots of both pages are taken on
// the way (into IMGATE_SCREENSHOT_DIR; docs/ with IMGATE_WRITE_SCREENSHOTS=1).
//
// Run by gateway/tests/browser.rs, which sets IMGATE_BIN, IMGATE_CHROMIUM and the app's push
// configuration for its mock APNs (IMGATE_PUSH_CONFIG, _TOPIC, _TOKEN: the mock never answers
// that token's first push). Every wait is for an event in a page (a state, a text, a message
// count), bounded by Playwright's timeouts.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { ADMIN_TOKEN, startServer } from "./server.mjs";

const BINARY = process.env.IMGATE_BIN;
const CHROMIUM = process.env.IMGATE_CHROMIUM ?? "/usr/bin/chromium";
const DOCS = fileURLToPath(new URL("../../../docs/", import.meta.url));
const SHOTS = process.env.IMGATE_WRITE_SCREENSHOTS === "1" ? DOCS : process.env.IMGATE_SCREENSHOT_DIR;
const WAIT = { timeout: 15_000 };
const PUSH = {
  config: process.env.IMGATE_PUSH_CONFIG,
  topic: process.env.IMGATE_PUSH_TOPIC,
  token: process.env.IMGATE_PUSH_TOKEN,
};

// The closed network refuses what Chromium fetches for itself; these keep it quiet.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let server;
let browser;

/** A page of its own browser context (its own network switch, storage and devices). */
async function open(path, viewport = { width: 900, height: 700 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`page error on ${path}:`, error));
  await page.goto(`${server.admin}${path}`);
  return { context, page };
}

/** Waits until `user`'s pane in `page` is in client state `state`. */
async function state(page, user, state) {
  await page.locator(`.pane[data-user="${user}"] .state.${state}`).waitFor(WAIT);
}

/** Sends `text` to `to` from `user`'s pane and waits for its receipt. */
async function send(page, user, to, text) {
  const pane = page.locator(`.pane[data-user="${user}"]`);
  await pane.locator(".to").fill(to);
  await pane.locator(".text").fill(text);
  await pane.locator("button").click();
  const mine = pane.locator("li.mine").filter({ hasText: text }).last();
  await mine.locator(".meta").filter({ hasNotText: "sending…" }).waitFor(WAIT);
  return mine.locator(".meta").textContent();
}

/** Waits until `user` in `page` has received `count` messages; returns their texts. */
async function received(page, user, count) {
  await page.waitForFunction(
    ([user, count]) => (window.imgateDemo?.received(user).length ?? 0) >= count,
    [user, count],
    WAIT,
  );
  return page.evaluate((user) => window.imgateDemo.received(user), user);
}

async function screenshot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

describe("the demo page and the console in Chromium", () => {
  let alice;
  let bob;

  before(async () => {
    assert.ok(BINARY, "IMGATE_BIN names the imgate binary");
    assert.ok(PUSH.config && PUSH.topic && PUSH.token, "IMGATE_PUSH_* describe the mock APNs");
    server = await startServer(BINARY, PUSH.config);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30_000 });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("two pages exchange messages", async () => {
    alice = await open("/demo/?users=alice&to=bob");
    bob = await open("/demo/?users=bob&to=alice");
    await state(alice.page, "alice", "open");
    await state(bob.page, "bob", "open");

    assert.match(await send(alice.page, "alice", "bob", "hello bob"), /delivered/);
    const atBob = await received(bob.page, "bob", 1);
    assert.deepEqual(
      atBob.map((m) => [m.from, m.text]),
      [["alice", "hello bob"]],
    );
    await bob.page.locator("li.theirs").filter({ hasText: "hello bob" }).waitFor(WAIT);

    await send(bob.page, "bob", "alice", "hi alice");
    const atAlice = await received(alice.page, "alice", 1);
    assert.deepEqual(
      atAlice.map((m) => [m.from, m.text]),
      [["bob", "hi alice"]],
    );
  });

  it("with WebSocket blocked, two pages talk over the HTTP fallback", async () => {
    // A proxy that refuses WebSocket: every upgrade in these contexts is closed at once, so
    // the SDK falls back to the HTTP transport (the page's `http_url`).
    const blocked = async (path) => {
      const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
      await context.routeWebSocket(/.*/, (ws) => ws.close());
      const page = await context.newPage();
      page.on("pageerror", (error) => console.error(`page error on ${path}:`, error));
      page.on("console", (m) => console.error(`console on ${path}: ${m.text()}`));
      page.on("requestfailed", (r) => console.error(`request failed on ${path}: ${r.url()} ${r.failure()?.errorText}`));
      const httpRequests = [];
      page.on("request", (r) => {
        if (new URL(r.url()).pathname.startsWith("/imgate")) httpRequests.push(r.url());
      });
      await page.goto(`${server.admin}${path}`);
      return { context, page, httpRequests };
    };
    const erin = await blocked("/demo/?users=erin&to=frank");
    const frank = await blocked("/demo/?users=frank&to=erin");
    try {
      await state(erin.page, "erin", "open");
      await state(frank.page, "frank", "open");
      assert.match(await send(erin.page, "erin", "frank", "over http"), /delivered/);
      const atDave = await received(frank.page, "frank", 1);
      assert.deepEqual(atDave.map((m) => [m.from, m.text]), [["erin", "over http"]]);
      await send(frank.page, "frank", "erin", "and back");
      const atCarol = await received(erin.page, "erin", 1);
      assert.deepEqual(atCarol.map((m) => [m.from, m.text]), [["frank", "and back"]]);
      assert.ok(erin.httpRequests.length > 0, "erin's page used the HTTP fallback");
      assert.ok(frank.httpRequests.length > 0, "frank's page used the HTTP fallback");
    } finally {
      await erin.context.close();
      await frank.context.close();
    }
  });

  it("a page that goes offline while messages arrive gets every one exactly once", async () => {
    await bob.context.setOffline(true);
    await state(bob.page, "bob", "offline");
    const texts = Array.from({ length: 5 }, (_, i) => `while you were away ${i + 1}`);
    for (const text of texts) await send(alice.page, "alice", "bob", text);

    await bob.context.setOffline(false);
    await state(bob.page, "bob", "open");
    await bob.page.locator("li.note").filter({ hasText: "resumed" }).waitFor(WAIT);
    // A last message after the resume: once it is in, anything replayed twice would be too.
    await send(alice.page, "alice", "bob", "welcome back");
    const all = await received(bob.page, "bob", 7);
    assert.deepEqual(
      all.map((m) => m.text),
      ["hello bob", ...texts, "welcome back"],
    );
    const seqs = all.map((m) => m.seq);
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => seqs[0] + i),
      "one session, gap-free",
    );
    assert.equal(new Set(all.map((m) => m.messageId)).size, all.length, "no message twice");
  });

  it("the two-user demo page shows alice and bob talking", async () => {
    const demo = await open("/demo/", { width: 1100, height: 620 });
    await state(demo.page, "alice", "open");
    await state(demo.page, "bob", "open");
    await send(demo.page, "alice", "bob", "Hi Bob! This is the imgate demo.");
    await received(demo.page, "bob", 1);
    await send(demo.page, "bob", "alice", "Hi Alice, it works: over WebSocket, through the SDK.");
    await received(demo.page, "alice", 1);
    await send(demo.page, "alice", "bob", "Now try the console: /console/");
    await received(demo.page, "bob", 2);
    await screenshot(demo.page, "demo.png");
    await demo.context.close();
  });

  it("the console shows a connected user and a push waiting for another, and kicks the first", async () => {
    const carol = await open("/demo/?users=carol&to=alice");
    await state(carol.page, "carol", "open");
    // Dave registers an APNs token from his page, then logs out: his messages are pushed.
    const dave = await open("/demo/?users=dave");
    await state(dave.page, "dave", "open");
    const registered = await dave.page.evaluate(
      async ({ token, topic }) => {
        const client = window.imgateDemo.panes.dave.client;
        const receipt = await client.registerPush({ provider: 1 /* APNS */, token, topic });
        await client.logout();
        return receipt.status;
      },
      { token: PUSH.token, topic: PUSH.topic },
    );
    assert.equal(registered, 1, "RegisterPush ACCEPTED");
    await state(dave.page, "dave", "stopped");
    await dave.context.close();

    const admin = await open("/console/", { width: 1280, height: 900 });
    const $ = (selector) => admin.page.locator(selector);
    // No data without the token.
    await $("#status").filter({ hasText: "token" }).waitFor(WAIT);
    await $("#token").fill(ADMIN_TOKEN);
    await $("#token-form button").click();
    await $("#m-sessions").filter({ hasNotText: "–" }).waitFor(WAIT);
    // alice, bob and carol are connected over the WebSocket listener.
    await $("#transports tbody tr").filter({ hasText: "ws" }).filter({ hasText: "3" }).waitFor(WAIT);

    // A test message to carol, and one with a push alert to dave, who has no session.
    await $("#send-target").fill("carol");
    await $("#send-text").fill("a test message from the console");
    await $("#send-form button[type=submit]").click();
    await $("#send-result").filter({ hasText: "carol" }).filter({ hasText: "sent" }).waitFor(WAIT);
    const atCarol = await received(carol.page, "carol", 1);
    assert.deepEqual(
      atCarol.map((m) => [m.from, m.text]),
      [["console", "a test message from the console"]],
    );
    await $("#send-target").fill("dave");
    await $("#send-text").fill("dave, you have a message");
    await $("#send-push").check();
    await $("#send-form button[type=submit]").click();
    await $("#send-result").filter({ hasText: "dave: offline" }).waitFor(WAIT);
    await $("#undelivered-list tbody tr").filter({ hasText: "dave" }).filter({ hasText: "no_session" }).waitFor(WAIT);
    // The mock APNs holds the push: queued, being sent, badge 1, a prefix of the token.
    await $("#push-summary").filter({ hasText: "1 queued, 1 being sent" }).waitFor(WAIT);
    const queued = $("#push-queue tbody tr").filter({ hasText: "sending" });
    assert.match(await queued.textContent(), new RegExp(`apns${PUSH.token.slice(0, 12)}…alert1`));

    await $("#user-name").fill("dave");
    await $("#user-form button").click();
    await $("#sessions tbody td.empty").filter({ hasText: "dave has no session" }).waitFor(WAIT);
    await $("#badge").filter({ hasText: "Badge: 1" }).waitFor(WAIT);
    assert.match(await $("#devices tbody tr").textContent(), new RegExp(`apns${PUSH.token.slice(0, 12)}…`));

    // Carol's session, attached.
    await $("#user-name").fill("carol");
    await $("#user-form button").click();
    const row = $("#sessions tbody tr").filter({ hasText: "attached" });
    await row.waitFor(WAIT);
    assert.match(await row.textContent(), /web-carol-/);
    // Rates need two samples of /metrics.
    await $("#m-delivered").filter({ hasNotText: "–" }).waitFor(WAIT);
    await screenshot(admin.page, "console.png");

    await row.locator("button.kick").click();
    await carol.page.locator("li.note").filter({ hasText: "stopped: kicked by the server" }).waitFor(WAIT);
    await state(carol.page, "carol", "stopped");
    await $("#sessions tbody td.empty").filter({ hasText: "carol has no session" }).waitFor(WAIT);
  });
});
