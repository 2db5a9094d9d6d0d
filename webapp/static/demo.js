// The demo page (/demo): sign in, send messages through tributary.js, watch each one on its
// way to the database, and watch the live aggregates of the key they carry (a subscription:
// no polling). `window.demo.client` is the client, for playing with in the console.

import { connect } from "./tributary.js";

/** sessionStorage key of the signed-in user's tokens, so that a reload stays signed in. */
const SESSION = "tributary-demo-session";
/** Rows kept in the "latest messages" table. */
const LATEST = 20;
const STATS_EVERY_MS = 3000;
const STATES = ["queued", "sent", "accepted", "stored", "refused"];
/** The key messages carry until the user picks another. */
const DEFAULT_KEY = "demo";

const $ = (id) => document.getElementById(id);

const demo = {
  client: null,
  session: null,
  /** Messages this page generated, and how many are in each state now (stored and refused:
   * how many reached it). */
  generated: 0,
  counts: Object.fromEntries(STATES.map((state) => [state, 0])),
  /** Current state of every message not yet stored or refused. */
  states: new Map(),
  rows: new Map(),
  running: false,
  sequence: 0,
  /** The key followed live: its latest figures, how many updates came, the subscription's
   * status, and the function that ends it. */
  live: { key: DEFAULT_KEY, stats: null, updates: 0, status: "", unsubscribe: null },
};
window.demo = demo;

// --- signing in ------------------------------------------------------------------------------

async function call(path, { method = "GET", token = null, body = undefined } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  return { response, data };
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const credentials = { username: form.username.value, password: form.password.value };
  const error = $("login-error");
  error.textContent = "";
  try {
    if (event.submitter?.value === "register") {
      const { response, data } = await call("/api/auth/register",
        { method: "POST", body: credentials });
      if (response.status !== 201) throw new Error(data.error || `register: ${response.status}`);
    }
    const { response, data } = await call("/api/auth/login",
      { method: "POST", body: credentials });
    if (response.status === 429) {
      throw new Error(`too many attempts: try again in ${response.headers.get("Retry-After")
        || "a few"} seconds`);
    }
    if (!response.ok) throw new Error(data.error || `login: ${response.status}`);
    const session = { username: credentials.username, access_token: data.access_token,
      refresh_token: data.refresh_token, persist: form.persist.checked };
    sessionStorage.setItem(SESSION, JSON.stringify(session));
    form.password.value = "";
    start(session);
  } catch (failure) {
    error.textContent = failure.message;
  }
});

$("logout").addEventListener("click", async () => {
  const session = demo.session;
  stopSending();
  demo.client?.close();
  demo.client = null;
  sessionStorage.removeItem(SESSION);
  if (session) {
    await call("/api/auth/logout", { method: "POST", token: session.access_token,
      body: { refresh_token: session.refresh_token } }).catch(() => null);
  }
  location.reload();
});

// --- the client --------------------------------------------------------------------------------

function start(session) {
  demo.session = session;
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("username").textContent = session.username;
  const client = connect("", { token: session.access_token,
    refreshToken: session.refresh_token, persist: session.persist ? "localStorage" : false });
  demo.client = client;
  client.on("state", onState);
  client.on("connection", (status, detail) => {
    const label = $("connection");
    label.dataset.status = status;
    label.textContent = detail.reason ? `${status}: ${detail.reason}` : status;
    // Subscriptions end with the connection; the client subscribes again on the next one.
    if (status === "disconnected" || status === "stopped") showLiveStatus("not connected");
    if (status === "stopped") {
      stopSending();
      const stopped = $("stopped");
      stopped.hidden = false;
      const next = /disabled/.test(detail.reason || "")
        ? "This account can no longer send; unsent messages are kept in this browser."
        : "Log out and sign in again; unsent messages are kept.";
      stopped.textContent = `Stopped: ${detail.reason}. ${next}`;
    }
  });
  client.on("token", (token) => {
    session.access_token = token;
    sessionStorage.setItem(SESSION, JSON.stringify(session));
  });
  client.on("subscription", (key, status, detail) => {
    if (key === demo.live.key) showLiveStatus(status, detail.error);
  });
  follow($("key").value || DEFAULT_KEY);
  refreshStats();
  setInterval(refreshStats, STATS_EVERY_MS);
}

let textOfNext = null;

function generate() {
  demo.sequence += 1;
  demo.generated += 1;
  textOfNext = `demo message ${demo.sequence}`;
  demo.client.send({ message: textOfNext, key: demo.live.key,
    value: Math.round(Math.random() * 1000) / 10 });
  textOfNext = null;
  render();
}

function onState(msgId, state, detail) {
  const previous = demo.states.get(msgId);
  if (previous) demo.counts[previous] -= 1;
  demo.counts[state] += 1;
  if (state === "stored" || state === "refused") demo.states.delete(msgId);
  else demo.states.set(msgId, state);
  let row = demo.rows.get(msgId);
  if (!row && !previous && state !== "stored" && state !== "refused") {
    row = addRow(msgId, textOfNext ?? (detail.restored ? "(from before the reload)" : ""));
  }
  if (row) {
    const cell = row.cells[2];
    cell.textContent = state;
    cell.dataset.state = state;
    row.cells[3].textContent = describe(state, detail);
  }
  if (state === "stored") refreshStatsSoon();
  render();
}

function describe(state, detail) {
  if (detail.error) return detail.retry ? `retrying: ${detail.error}` : detail.error;
  if (detail.id) return `stream id ${detail.id}`;
  return "";
}

function addRow(msgId, text) {
  const row = document.createElement("tr");
  for (const value of [msgId, text, "", ""]) {
    const cell = document.createElement("td");
    cell.textContent = value;
    row.append(cell);
  }
  row.dataset.msgId = msgId;
  $("latest").prepend(row);
  demo.rows.set(msgId, row);
  while (demo.rows.size > LATEST) {
    const [oldest, oldRow] = demo.rows.entries().next().value;
    oldRow.remove();
    demo.rows.delete(oldest);
  }
  return row;
}

let rendering = false;

function render() {
  if (rendering) return;
  rendering = true;
  requestAnimationFrame(() => {
    rendering = false;
    $("count-generated").textContent = demo.generated;
    for (const state of STATES) $(`count-${state}`).textContent = demo.counts[state];
    $("count-outbox").textContent = demo.client ? demo.client.pending() : 0;
  });
}

// --- sending -----------------------------------------------------------------------------------

let timer = null;

function tick() {
  if (!demo.running) return;
  generate();
  const rate = Math.min(50, Math.max(0.1, Number($("rate").value) || 1));
  timer = setTimeout(tick, 1000 / rate);
}

function stopSending() {
  demo.running = false;
  clearTimeout(timer);
  $("start").textContent = "Start";
}

$("start").addEventListener("click", () => {
  if (demo.running) {
    stopSending();
    return;
  }
  demo.running = true;
  $("start").textContent = "Stop";
  tick();
});

$("burst").addEventListener("click", () => {
  const size = Math.min(1000, Math.max(1, Number($("burst-size").value) || 50));
  for (let n = 0; n < size; n++) generate();
});

// --- aggregates --------------------------------------------------------------------------------

/** Follow the live aggregates of `key` (and no longer those of the key followed before). */
function follow(key) {
  demo.live.unsubscribe?.();
  demo.live = { key, stats: null, updates: 0, status: "", unsubscribe: null };
  $("live-key").textContent = key;
  showLiveStatus("subscribing");
  showFigures("live", null);
  const live = demo.live;
  live.unsubscribe = demo.client.subscribe(key, (stats) => {
    live.stats = stats;
    live.updates += 1;
    showFigures("live", stats);
  });
}

function showLiveStatus(status, error = null) {
  demo.live.status = status;
  const label = $("live-status");
  label.dataset.status = status;
  label.textContent = error ? `${status}: ${error}` : status;
}

$("key").addEventListener("change", (event) => {
  const input = event.target;
  if (!input.checkValidity() || !input.value) {
    input.value = demo.live.key;
    return;
  }
  if (demo.client && input.value !== demo.live.key) follow(input.value);
});

let statsSoon = null;

function refreshStatsSoon() {
  if (statsSoon === null) statsSoon = setTimeout(refreshStats, 300);
}

async function refreshStats() {
  statsSoon = null;
  if (!demo.session) return;
  const path = `/api/users/${encodeURIComponent(demo.session.username)}/stats`;
  const { response, data } = await call(path, { token: demo.session.access_token })
    .catch(() => ({ response: null, data: null }));
  if (!response?.ok) return;
  showFigures("stat", data);
}

/** Aggregates (the API's and the `stats` event's shape, or null for none yet) into the
 * table whose cells' ids start with `prefix`. */
function showFigures(prefix, data) {
  const shown = {
    message_count: data?.messages, value_count: data?.values.count,
    value_sum: data?.values.sum, value_min: data?.values.min, value_max: data?.values.max,
    value_avg: data?.values.avg, last_seen: data?.last_seen,
  };
  for (const [name, value] of Object.entries(shown)) {
    const cell = $(`${prefix}-${name}`);
    if (!cell) continue;
    cell.textContent = value === null || value === undefined ? "–" :
      typeof value === "number" && !Number.isInteger(value) ? value.toFixed(2) : value;
  }
}

// --- the page opens ----------------------------------------------------------------------------

const saved = JSON.parse(sessionStorage.getItem(SESSION) || "null");
if (saved) start(saved);
else $("login").hidden = false;
