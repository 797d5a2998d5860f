// The demo chat page: one `ImgateClient` (@imgate/client, the bundle beside this file) per
// pane, logged in with a development token from this listener's /demo/token. Payloads are
// plain UTF-8 text, as `imgate chat` sends them, so the terminal client can join in.
//
// `?users=alice,bob` picks the panes (default two: alice and bob); `&to=NAME` the first
// recipient of a single pane. `window.imgateDemo` exposes each pane's client and what it
// received, for the browser tests (gateway/tests/browser/).

import { GoAwayReason, ImgateClient, ReceiptStatus } from "/demo/imgate-client.js";

const params = new URLSearchParams(location.search);
const users = (params.get("users") ?? "alice,bob")
  .split(",")
  .map((u) => u.trim())
  .filter(Boolean);
const decoder = new TextDecoder();

async function demoConfig() {
  const response = await fetch("/demo/config");
  if (!response.ok) throw new Error(`/demo/config: ${response.status}`);
  return response.json();
}

async function token(user) {
  const response = await fetch("/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? `token: ${response.status}`);
  return body.token;
}

/** A device id per user and tab: a second tab as the same user is a second device. */
function deviceId(user) {
  const key = `imgate.demo.device.${user}`;
  let id = sessionStorage.getItem(key);
  if (!id) {
    id = `web-${user}-${Math.random().toString(36).slice(2, 10)}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

function item(log, className, text, meta) {
  const li = document.createElement("li");
  li.className = className;
  li.append(text);
  if (meta !== undefined) {
    const small = document.createElement("span");
    small.className = "meta";
    small.textContent = meta;
    li.append(small);
  }
  log.append(li);
  log.scrollTop = log.scrollHeight;
  return li;
}

function stopReason(cause) {
  if (cause.kind === "goAway") {
    if (cause.goAway.reason === GoAwayReason.KICKED) return "kicked by the server";
    if (cause.goAway.reason === GoAwayReason.TAKEOVER) return "taken over by another connection";
  }
  if (cause.kind === "error") return `error ${cause.code}: ${cause.message}`;
  return cause.kind;
}

function pane(config, user, to) {
  const node = document.getElementById("pane").content.firstElementChild.cloneNode(true);
  node.dataset.user = user;
  node.querySelector(".user").textContent = user;
  const state = node.querySelector(".state");
  const log = node.querySelector(".log");
  const form = node.querySelector(".compose");
  form.querySelector(".to").value = to ?? "";
  document.getElementById("panes").append(node);

  const client = new ImgateClient({
    url: config.url,
    // Falls back to the HTTP transport when WebSocket fails (a proxy that blocks it).
    httpUrl: config.http_url ?? undefined,
    appId: config.app,
    deviceId: deviceId(user),
    token: () => token(user),
  });
  const received = [];
  client.on("state", (s) => {
    state.textContent = s;
    state.className = `state ${s}`;
  });
  client.on("open", (welcome) => {
    item(log, "note", welcome.resumed ? "resumed" : `connected (session ${welcome.sessionId.toString(16)})`);
  });
  client.on("message", (m) => {
    const text = decoder.decode(m.payload);
    received.push({ from: m.from, text, seq: Number(m.seq), messageId: m.messageId.toString() });
    const where = m.room ? ` in #${m.room}` : "";
    item(log, "theirs", text, `${m.from || "server"}${where} · ${new Date(Number(m.sentAtMs) || Date.now()).toLocaleTimeString()}`);
  });
  client.on("disconnected", ({ retryInMs }) => {
    item(log, "note", retryInMs === undefined ? "disconnected" : `disconnected, retrying in ${Math.round(retryInMs)} ms`);
  });
  client.on("stopped", (cause) => item(log, "note", `stopped: ${stopReason(cause)}`));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = form.querySelector(".text");
    const recipient = form.querySelector(".to").value.trim();
    const text = input.value;
    if (!recipient || !text) return;
    input.value = "";
    const li = item(log, "mine", text, `to ${recipient} · sending…`);
    try {
      const receipt = await client.send({ user: recipient }, text);
      li.querySelector(".meta").textContent = `to ${recipient} · ${ReceiptStatus[receipt.status].toLowerCase().replace("_", " ")}`;
    } catch (error) {
      li.querySelector(".meta").textContent = `to ${recipient} · not sent: ${error.message}`;
    }
  });
  client.connect();
  return { client, received };
}

async function start() {
  const config = await demoConfig();
  document.getElementById("app").textContent = config.app;
  document.getElementById("url").textContent = config.url;
  const panes = {};
  users.forEach((user, index) => {
    const to = users.length > 1 ? users[(index + 1) % users.length] : params.get("to");
    panes[user] = pane(config, user, to);
  });
  window.imgateDemo = { panes, received: (user) => panes[user]?.received ?? [] };
}

start().catch((error) => {
  document.getElementById("panes").textContent = `The demo could not start: ${error.message}`;
});
