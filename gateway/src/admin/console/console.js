// The imgate web console: plain ES module, no framework. Everything it shows comes from the
// admin API of the listener that served it (docs/operations.md, "Admin HTTP"): the overview
// from /metrics (the same series Prometheus scrapes, rates computed between two samples),
// the rest from the /v1/ JSON routes. The admin token is asked for here and sent as the
// API's `Authorization: Bearer` header; it is kept in this tab's sessionStorage only.

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem("imgate.adminToken") ?? "";
let previous = null; // { at, counters } of the last /metrics sample

function status(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = kind;
}

/** A request to the admin API with the token; throws with the API's `{"error"}` message. */
async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    status("the admin token is missing or wrong: enter it above", "error");
    throw new Error("unauthorized");
  }
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try {
      message = JSON.parse(text).error ?? text;
    } catch {
      // Not JSON: show the text as it is.
    }
    throw new Error(`${response.status}: ${message}`);
  }
  return response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
}

// ---------- overview (Prometheus text) ----------

/** Parses OpenMetrics / Prometheus text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key] = value;
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((total, s) => total + s.value, 0);
}

function rate(now, counters, key) {
  if (!previous || !(key in previous.counters)) return null;
  const seconds = (now - previous.at) / 1000;
  return seconds > 0 ? Math.max(0, (counters[key] - previous.counters[key]) / seconds) : null;
}

function show(id, value, digits = 0) {
  $(id).textContent = value === null || Number.isNaN(value) ? "–" : value.toFixed(digits);
}

async function refreshOverview() {
  const samples = parseMetrics(await api("GET", "/metrics"));
  const now = Date.now();
  const counters = {
    delivered: sum(samples, "imgate_deliveries_total", (l) => l.outcome === "sent" || l.outcome === "buffered"),
    framesIn: sum(samples, "imgate_frames_total", (l) => l.direction === "in"),
    framesOut: sum(samples, "imgate_frames_total", (l) => l.direction === "out"),
    pushes: sum(samples, "push_requests_total"),
  };
  show("m-sessions", sum(samples, "imgate_sessions"));
  show("m-connections", sum(samples, "imgate_connections"));
  show("m-delivered", rate(now, counters, "delivered"), 1);
  show("m-frames-in", rate(now, counters, "framesIn"), 1);
  show("m-frames-out", rate(now, counters, "framesOut"), 1);
  show("m-pushes", rate(now, counters, "pushes"), 1);
  const depth = samples.filter((s) => s.name === "push_queue_depth");
  $("m-push-queue").textContent = depth.length ? String(sum(samples, "push_queue_depth")) : "no push";
  previous = { at: now, counters };

  const byTransport = new Map();
  for (const s of samples.filter((s) => s.name === "imgate_connections")) {
    byTransport.set(s.labels.transport, (byTransport.get(s.labels.transport) ?? 0) + s.value);
  }
  fill(
    $("transports"),
    [...byTransport].sort().map(([transport, open]) => [transport, String(open)]),
    "no client connection yet",
  );
  $("updated").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
}

// ---------- tables ----------

/** Replaces a table's body with `rows` (arrays of strings or nodes). */
function fill(table, rows, empty) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = table.tHead.rows[0].cells.length;
    cell.className = "empty";
    cell.textContent = empty;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) {
      const cell = tr.insertCell();
      if (value instanceof Node) cell.append(value);
      else cell.textContent = value ?? "";
    }
  }
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function span(text, className) {
  const el = document.createElement("span");
  el.textContent = text;
  el.className = className;
  return el;
}

// ---------- user lookup, kick ----------

async function lookUp() {
  const app = $("user-app").value;
  const user = $("user-name").value.trim();
  if (!app || !user) return;
  const view = await api("GET", `/v1/users/${encodeURIComponent(app)}/${encodeURIComponent(user)}`);
  $("user-result").hidden = false;
  fill(
    $("sessions"),
    view.sessions.map((s) => {
      const kick = document.createElement("button");
      kick.className = "kick";
      kick.textContent = "Kick";
      kick.dataset.session = s.id;
      kick.addEventListener("click", () => act(() => kickSession(s.id)));
      return [
        s.id,
        s.device,
        s.platform,
        span(s.attached ? "attached" : "detached", s.attached ? "attached" : "detached"),
        String(s.unacked),
        String(s.last_seq),
        kick,
      ];
    }),
    `${user} has no session`,
  );
  if (view.push === null) {
    $("badge").textContent = "Push is not configured for this app.";
    fill($("devices"), [], "no push");
  } else if (view.push.error) {
    $("badge").textContent = `Push: ${view.push.error}`;
    fill($("devices"), [], "unavailable");
  } else {
    $("badge").textContent = `Badge: ${view.push.badge}`;
    fill(
      $("devices"),
      view.push.devices.map((d) => [d.device, d.provider + (d.sandbox ? " (sandbox)" : ""), d.token, time(d.registered_at_ms)]),
      "no registered push token",
    );
  }
}

async function kickSession(id) {
  await api("DELETE", `/v1/sessions/${id}`);
  status(`session ${id} kicked`, "ok");
  await lookUp();
}

// ---------- test message ----------

async function send() {
  const kind = $("send-kind").value;
  const target = { [kind]: $("send-target").value.trim() };
  const text = $("send-text").value;
  const request = { app: $("send-app").value, target, text, from: "console" };
  // Push options make the message pushable: a device without a session is woken with it.
  if ($("send-push").checked) request.push = { title: "imgate console", body: text };
  const report = await api("POST", "/v1/deliver", request);
  const outcomes = report.devices.map((d) => `${d.user}${d.device ? "/" + d.device : ""}: ${d.outcome}`);
  $("send-result").textContent = `message ${report.message_id}: ${outcomes.join(", ") || "no recipient"}`;
}

// ---------- push queue, undelivered ----------

async function refreshPush() {
  const app = $("push-app").value;
  if (!app) return;
  const queue = await api("GET", `/v1/push/${encodeURIComponent(app)}/queue`);
  if (!queue.configured) {
    $("push-summary").textContent = `Push is not configured for app ${app}.`;
    fill($("push-queue"), [], "no push queue");
    return;
  }
  $("push-summary").textContent = `${queue.pending} queued, ${queue.in_flight} being sent`;
  fill(
    $("push-queue"),
    queue.next.map((p) => [
      String(p.id),
      p.provider,
      p.token,
      p.kind,
      p.badge === null ? "" : String(p.badge),
      String(p.attempts),
      time(p.not_before_ms),
      time(p.expires_at_ms),
      p.sending ? "sending" : "",
    ]),
    "the queue is empty",
  );
}

async function refreshUndelivered() {
  const records = await api("GET", "/v1/undelivered");
  fill(
    $("undelivered-list"),
    records.map((r) => [time(r.at_ms), r.app, r.user, r.device ?? "", String(r.message_id), r.reason]),
    "nothing undelivered since the start",
  );
}

// ---------- wiring ----------

/** Runs an action, showing its failure in the status line. */
async function act(action) {
  try {
    await action();
  } catch (error) {
    if (error.message !== "unauthorized") status(error.message, "error");
  }
}

async function loadApps() {
  const apps = await api("GET", "/v1/apps");
  for (const select of document.querySelectorAll("select.apps")) {
    const chosen = select.value;
    select.replaceChildren(...apps.map((a) => new Option(a.id, a.id)));
    if (chosen) select.value = chosen;
  }
}

async function refresh() {
  await refreshOverview();
  if (!$("push-app").value) await loadApps();
  await refreshPush();
  await refreshUndelivered();
  // A user once looked up stays on view, live.
  if (!$("user-result").hidden) await lookUp();
  if ($("status").className === "error" && $("status").textContent.includes("token")) status("");
}

function start() {
  $("token").value = token;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("imgate.adminToken", token);
    status("");
    act(refresh);
  });
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(lookUp);
  });
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(send);
  });
  $("push-app").addEventListener("change", () => act(refreshPush));
  act(refresh);
  setInterval(() => act(refresh), REFRESH_MS);
}

start();
