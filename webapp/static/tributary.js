// tributary.js: Tributary's client, for web pages (and Node), as a plain ES module.
//
//   import { connect } from "/static/tributary.js";
//   const client = connect("https://tributary.example", { token, refreshToken, persist: true });
//   client.on("state", (msg_id, state, detail) => console.log(msg_id, state, detail));
//   const { msg_id, id } = await client.send({ message: "hello", value: 1.5 });
//   const unsubscribe = client.subscribe("hello", (stats) => console.log(stats?.values.avg));
//
// A plain socket.io client delivers at most once: a message in flight when the connection
// drops is lost. This client keeps every message in an outbox until the server acknowledges
// it (the ack comes after the message is in Redis) and follows it until the engine's
// `committed` receipt says its row is in the database:
//
//   queued → sent → accepted (acked, with its stream entry id) → stored (committed receipt)
//                                                              ↘ refused (the server's reason)
//
// - Each message gets a msg_id here. A message whose ack never came (the connection dropped,
//   the ack timed out) is sent again, with the same msg_id, on the next connection: the
//   server stores a msg_id once. One batch is in flight at a time and every resend goes out
//   before anything newer, so the server sees this client's messages in the order they were
//   sent.
// - Refusals for bad input ("<field>: <reason>") are final; "rate limited", "backlog full,
//   retry later" and "unavailable" send the message back to `queued`, retried with backoff.
// - A receipt missed while the connection was down is made up for by asking the server
//   (the `status` event) about every accepted message after each reconnect, and about any
//   whose receipt is late.
// - With `persist`, messages not yet stored live in localStorage (or IndexedDB) too, so a
//   reload or a crashed tab loses nothing: the next page of the same user sends them again.
// - The access token is refreshed with the refresh token before it expires (and when the
//   server says "token expired"); the connection is then renewed with the fresh token.
// - Reconnects use exponential backoff with jitter. Messages queued together go out as one
//   `data` event carrying an array.
// - Subscriptions to the live aggregates of the user's keys end with a connection on the
//   server, so the client subscribes again on every connection; the answer carries the
//   figures of the moment, which makes up for any update missed in between.
//
// In a browser the socket.io client comes from the vendored bundle next to this file; in Node
// pass its `io` function: `connect(url, { token, io })` with `import { io } from
// "socket.io-client"`.

const VENDORED_SOCKET_IO = "./vendor/socket.io-client/socket.io.esm.min.js";

/** The fields a message may carry; the library adds `msg_id` (and `timestamp` when absent). */
const MESSAGE_FIELDS = new Set(["message", "key", "value", "timestamp"]);

/** Refusals that say "not now" rather than "never": the message is sent again later. */
const RETRYABLE = new Set(["rate limited", "backlog full, retry later", "unavailable",
  "not connected", "internal error"]);

/** Connection refusals after which a fresh access token may help. */
const TOKEN_PROBLEMS = new Set(["token expired", "invalid token"]);

/** Most msg_ids in one `status` question (the server takes up to 1,000). */
const STATUS_CHUNK = 500;

/** Most characters in a key (the server's MAX_KEY_CHARS). */
const MAX_KEY_CHARS = 255;

const DEFAULTS = {
  token: "",
  refreshToken: "",
  /** false, true (= "localStorage"), "localStorage", "indexedDB", or a store object. */
  persist: false,
  /** Messages not yet accepted that the outbox holds before send() refuses more. */
  maxOutbox: 10000,
  /** Most messages, and most bytes of JSON, in one `data` event. */
  batchSize: 100,
  batchBytes: 256 * 1024,
  /** Milliseconds to wait for an ack before sending the batch again. */
  ackTimeout: 10000,
  /** Reconnect backoff: first delay and cap, in milliseconds (doubling, with jitter). */
  reconnectDelay: 500,
  reconnectDelayMax: 10000,
  /** Backoff after a retryable refusal ("rate limited", …): first delay and cap. */
  retryDelay: 250,
  retryDelayMax: 10000,
  /** Milliseconds after its ack before an accepted message's missing receipt is asked
   * about, and how often that check runs. */
  receiptTimeout: 20000,
  statusInterval: 10000,
  /** Refresh the access token this long before it expires (at most a fifth of its life). */
  refreshMargin: 30000,
  /** socket.io transports; the default (long-polling, then websocket) lets the page read why
   * a connection was refused, such as an origin the server does not accept. */
  transports: ["polling", "websocket"],
  /** The socket.io client's `io` function; the vendored bundle when absent. */
  io: null,
};

/**
 * Connect to the Tributary server at `url` ("" or the page's origin for the server that
 * served the page). Returns the client at once; it connects in the background.
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export class TributaryError extends Error {
  constructor(reason, msgId = null) {
    super(reason);
    this.name = "TributaryError";
    /** The server's reason (or the library's: "outbox full", "client closed"). */
    this.reason = reason;
    this.msg_id = msgId;
  }
}

export class Client {
  constructor(url, options = {}) {
    for (const name of Object.keys(options)) {
      if (!(name in DEFAULTS)) throw new TypeError(`tributary: unknown option ${name}`);
    }
    this.url = String(url || "").replace(/\/+$/, "");
    this.options = { ...DEFAULTS, ...options };
    this._token = this.options.token;
    this._refreshToken = this.options.refreshToken;
    this._listeners = new Map();
    /** Messages not yet accepted, in the order they were sent (queued or sent). */
    this._outbox = [];
    /** Accepted messages waiting for their receipt, by msg_id. */
    this._awaiting = new Map();
    /** Every message not yet settled (stored or refused), by msg_id. */
    this._records = new Map();
    /** Live aggregates followed, by key: {key, listeners, figures, asked, live, attempt};
     * `asked` and `live` are the connections it was asked on and subscribed on. */
    this._subscriptions = new Map();
    /** Counts connections, so that an answer from a connection gone by is ignored. */
    this._connection = 0;
    this._seq = 0;
    this._socket = null;
    this._connected = false;
    this._inFlight = null;
    this._retryAttempt = 0;
    this._pausedUntil = 0;
    this._reconnectAttempt = 0;
    this._renewing = false;
    this._sessionEnded = null;
    this._stopped = null;
    this._closed = false;
    this._timers = new Set();
    this._refreshTimer = null;
    this._refreshing = null;
    this._store = openStore(this.options.persist, this.url, subject(this._token));
    this._ready = this._start().catch((error) => this._stop(`cannot start: ${error.message}`));
  }

  // --- public surface ----------------------------------------------------------------------

  /**
   * Queue one message: `{message, key, value, timestamp}`, only `message` required. Resolves
   * with `{msg_id, id}` once it is stored in the database; rejects with a TributaryError
   * carrying the server's reason when it is refused for good.
   */
  send(message) {
    if (this._closed) throw new TributaryError("client closed");
    const record = this._record(normalize(message));
    if (this._outbox.length >= this.options.maxOutbox) {
      this._settle(record, "refused", {
        error: `outbox full: ${this._outbox.length} messages not yet accepted` });
      return record.promise;
    }
    try {
      this._store?.put(record);
    } catch (error) {
      this._settle(record, "refused", { error: `outbox full: cannot persist (${error.name})` });
      return record.promise;
    }
    this._records.set(record.msg_id, record);
    this._outbox.push(record);
    this._emit("state", record.msg_id, "queued", {});
    this._scheduleFlush();
    return record.promise;
  }

  /**
   * Follow the live aggregates of one of this user's keys. `listener(stats, key)` gets the
   * key's figures, `{user, key, messages, values: {count, sum, avg, min, max}, first_seen,
   * last_seen}` (null while nothing with this key is stored), once subscribed, and again after
   * each commit that changes them. The subscription is renewed on every connection. Returns
   * the function that ends it.
   */
  subscribe(key, listener) {
    if (this._closed) throw new TributaryError("client closed");
    if (typeof key !== "string" || key.length === 0 || [...key].length > MAX_KEY_CHARS) {
      throw new TypeError(`tributary: a key is a string of 1 to ${MAX_KEY_CHARS} characters`);
    }
    if (typeof listener !== "function") {
      throw new TypeError("tributary: subscribe() takes a key and a listener function");
    }
    let subscription = this._subscriptions.get(key);
    if (!subscription) {
      subscription = { key, listeners: new Set(), figures: undefined, asked: 0, live: 0,
        attempt: 0 };
      this._subscriptions.set(key, subscription);
      this._askSubscribe(subscription);
    }
    const entry = { listener }; // the same function subscribed twice is two subscribers
    subscription.listeners.add(entry);
    if (subscription.figures !== undefined) {
      // A key already followed: this listener gets the figures known, as the first one did.
      queueMicrotask(() => {
        if (subscription.listeners.has(entry)) {
          this._call("stats", listener, subscription.figures, key);
        }
      });
    }
    return () => this._unsubscribe(subscription, entry);
  }

  /** Listen to "state" (msg_id, state, detail), "connection" (status, detail), "token" (the
   * fresh access token after a refresh) or "subscription" (key, status, detail). */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return this;
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
    return this;
  }

  /** Messages in the outbox: sent with send() and not yet accepted by the server. */
  pending() {
    return this._outbox.length;
  }

  /** Messages accepted by the server whose row is not known to be stored yet. */
  unconfirmed() {
    return this._awaiting.size;
  }

  /** Why the client stopped for good ("token revoked", "origin not allowed", …), or null. */
  get stopped() {
    return this._stopped;
  }

  /** Disconnect and stop. Messages not yet stored stay persisted (with `persist`) for the
   * next client of the same user; their promises reject with "client closed". */
  close() {
    if (this._closed) return;
    this._closed = true;
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    clearTimeout(this._refreshTimer);
    if (this._socket) {
      this._socket.off();
      this._socket.disconnect();
    }
    this._connected = false;
    for (const record of this._records.values()) {
      record.reject(new TributaryError("client closed", record.msg_id));
    }
    this._records.clear();
    this._outbox = [];
    this._awaiting.clear();
    this._subscriptions.clear();
    this._emit("connection", "closed", {});
  }

  // --- start-up ----------------------------------------------------------------------------

  async _start() {
    const io = this.options.io || (await import(VENDORED_SOCKET_IO)).io;
    if (this._store) this._restore(await this._store.load());
    if (this._closed) return;
    this._scheduleRefresh();
    this._socket = io(this.url || undefined, {
      autoConnect: false, reconnection: false, forceNew: true,
      transports: this.options.transports,
      auth: (send) => send({ token: this._token }),
    });
    this._listen(this._socket);
    this._open();
  }

  /** Take back messages a previous page left in the store, before any sent since. */
  _restore(saved) {
    const restored = [];
    for (const item of saved) {
      if (this._records.has(item.msg_id)) continue;
      const record = this._record(item.payload, item);
      this._records.set(record.msg_id, record);
      restored.push(record);
    }
    const accepted = restored.filter((record) => record.state === "accepted");
    const unsent = restored.filter((record) => record.state !== "accepted");
    for (const record of unsent) record.state = "queued";
    this._outbox = [...unsent, ...this._outbox];
    for (const record of accepted) this._awaiting.set(record.msg_id, record);
    for (const record of restored) this._seq = Math.max(this._seq, record.seq);
    // After the page's own listeners are in place (they are added right after connect()).
    queueMicrotask(() => {
      for (const record of restored) {
        this._emit("state", record.msg_id, record.state,
          record.state === "accepted" ? { id: record.id, restored: true } : { restored: true });
      }
    });
    if (unsent.length) this._scheduleFlush();
  }

  _record(payload, saved = null) {
    let resolve;
    let reject;
    const promise = new Promise((yes, no) => { resolve = yes; reject = no; });
    // Handled here so that an ignored refusal is not an "unhandled rejection" (fatal in
    // Node); whoever awaits the promise still gets it.
    promise.catch(() => {});
    // Increasing, and past every restored one: the order messages are sent again in.
    const seq = saved ? saved.seq : (this._seq = Math.max(this._seq + 1, Date.now() * 1000));
    return {
      msg_id: payload.msg_id, payload, seq, size: JSON.stringify(payload).length,
      state: saved ? saved.state : "queued", id: saved ? saved.id ?? null : null,
      acceptedAt: 0, token: null, promise, resolve, reject,
    };
  }

  // --- the connection ------------------------------------------------------------------------

  _listen(socket) {
    socket.on("connect", () => this._onConnect());
    socket.on("disconnect", (reason) => this._onDisconnect(reason));
    socket.on("connect_error", (error) => this._onConnectError(error));
    socket.on("committed", (receipt) => {
      for (const msgId of receipt?.msg_ids || []) {
        const record = this._records.get(msgId); // other tabs' msg_ids are not ours
        if (record) this._settle(record, "stored", { id: record.id });
      }
    });
    socket.on("stats", (stats) => {
      const subscription = this._subscriptions.get(stats?.key);
      if (subscription && typeof stats.messages === "number") this._deliver(subscription, stats);
    });
    socket.on("dead_letter", (notice) => {
      const record = this._records.get(notice?.msg_id);
      if (record) this._settle(record, "refused", { error: notice.error, dead: true });
    });
    // The server ends a live session whose token expired (the client refreshes it and
    // connects again, outbox kept), was revoked, or whose account was disabled (the client
    // stops with that reason); it disconnects the client right after.
    socket.on("session_ended", (notice) => {
      this._sessionEnded = String(notice?.reason || "session ended");
      if (TOKEN_PROBLEMS.has(this._sessionEnded)) this._refresh();
      else this._stop(this._sessionEnded);
    });
  }

  _open() {
    if (this._closed || this._stopped) return;
    this._emit("connection", "connecting", { attempt: this._reconnectAttempt });
    this._socket.connect();
  }

  _onConnect() {
    this._connected = true;
    this._connection += 1;
    this._reconnectAttempt = 0;
    this._sessionEnded = null;
    this._renewing = false;
    this._emit("connection", "connected", {});
    this._askStatus([...this._awaiting.keys()]);
    if (!this._statusTimer) {
      this._statusTimer = this._every(this.options.statusInterval, () => this._askLate());
    }
    for (const subscription of this._subscriptions.values()) this._askSubscribe(subscription);
    this._flush();
  }

  _onDisconnect(reason) {
    this._connected = false;
    this._inFlight = null; // its ack, should it still come, is ignored
    for (const record of this._outbox) {
      if (record.state === "sent") {
        record.state = "queued";
        this._emit("state", record.msg_id, "queued", { error: "connection lost" });
      }
    }
    // `ended`: the server's reason when it ended the session ("token expired", …).
    this._emit("connection", "disconnected", this._sessionEnded ?
      { reason, ended: this._sessionEnded } : { reason });
    if (this._closed || this._stopped) return;
    if (this._renewing) {
      this._open(); // renewing with a fresh token: straight back
      return;
    }
    const ended = this._sessionEnded;
    if (ended && !TOKEN_PROBLEMS.has(ended)) {
      this._stop(ended);
      return;
    }
    if (ended) {
      this._afterRefresh();
      return;
    }
    this._reconnectLater();
  }

  _onConnectError(error) {
    this._renewing = false;
    const reason = refusal(error);
    if (TOKEN_PROBLEMS.has(reason) && this._refreshToken) {
      this._afterRefresh();
    } else if (reason === "unavailable" || reason === null) {
      this._reconnectLater();
    } else {
      this._stop(reason);
    }
  }

  _reconnectLater() {
    const delay = backoff(this._reconnectAttempt++, this.options.reconnectDelay,
      this.options.reconnectDelayMax);
    this._later(delay, () => this._open());
  }

  /** Refresh the access token, then connect again with it. */
  async _afterRefresh() {
    if (await this._refresh()) this._open();
  }

  _stop(reason) {
    this._stopped = reason;
    this._connected = false;
    clearTimeout(this._refreshTimer);
    this._socket?.disconnect();
    this._emit("connection", "stopped", { reason });
  }

  // --- tokens --------------------------------------------------------------------------------

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const claims = claimsOf(this._token);
    if (!this._refreshToken || !claims?.exp) return;
    const life = claims.iat ? (claims.exp - claims.iat) * 1000 : this.options.refreshMargin * 5;
    const margin = Math.min(this.options.refreshMargin, life / 5);
    const delay = Math.max(0, claims.exp * 1000 - Date.now() - margin);
    this._refreshTimer = setTimeout(async () => {
      if (await this._refresh()) this._renew();
    }, Math.min(delay, 2 ** 31 - 1));
  }

  /** A fresh access token from the refresh token; true when there is one. Network errors and
   * 5xx are retried with backoff; a refusal (401) stops the client. */
  _refresh() {
    if (!this._refreshToken) {
      this._stop("token expired");
      return Promise.resolve(false);
    }
    if (!this._refreshing) {
      this._refreshing = this._refreshLoop().finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _refreshLoop() {
    for (let attempt = 0; !this._closed; attempt++) {
      let response = null;
      try {
        response = await fetch(`${this.url}/api/auth/refresh`, {
          method: "POST", headers: { Authorization: `Bearer ${this._refreshToken}` } });
      } catch {
        response = null; // the server is down or unreachable: try again
      }
      if (response?.ok) {
        const body = await response.json();
        this._token = body.access_token;
        this._scheduleRefresh();
        this._emit("token", this._token);
        return true;
      }
      if (response && response.status >= 400 && response.status < 500 &&
          response.status !== 429) {
        const body = await response.json().catch(() => ({}));
        this._stop(`session ended: ${body.error || `refresh refused (${response.status})`}`);
        return false;
      }
      const wait = Number(response?.headers.get("Retry-After")) * 1000 ||
        backoff(attempt, this.options.reconnectDelay, this.options.reconnectDelayMax);
      await new Promise((resolve) => this._later(wait, resolve));
    }
    return false;
  }

  /** Renew the connection with the fresh token once no batch is in flight, so the server
   * never has to end a session whose token expired. */
  _renew() {
    if (!this._connected || this._closed) return;
    if (this._inFlight) {
      this._later(50, () => this._renew());
      return;
    }
    this._renewing = true;
    this._socket.disconnect();
  }

  // --- sending -------------------------------------------------------------------------------

  _scheduleFlush() {
    if (this._flushQueued) return;
    this._flushQueued = true;
    // Messages sent in the same turn of the event loop leave together.
    queueMicrotask(() => {
      this._flushQueued = false;
      this._flush();
    });
  }

  _flush() {
    if (!this._connected || this._inFlight || this._renewing || this._closed) return;
    const wait = this._pausedUntil - Date.now();
    if (wait > 0) {
      this._later(wait, () => this._flush());
      return;
    }
    const batch = [];
    let bytes = 0;
    for (const record of this._outbox) {
      if (batch.length >= this.options.batchSize) break;
      if (batch.length && bytes + record.size > this.options.batchBytes) break;
      batch.push(record);
      bytes += record.size;
    }
    if (!batch.length) return;
    const token = {};
    this._inFlight = token;
    for (const record of batch) {
      record.state = "sent";
      record.token = token;
      this._emit("state", record.msg_id, "sent", {});
    }
    const body = batch.length === 1 ? batch[0].payload : batch.map((record) => record.payload);
    this._socket.timeout(this.options.ackTimeout).emit("data", body,
      (error, answer) => this._onAck(token, batch, error, answer));
  }

  _onAck(token, batch, error, answer) {
    if (this._inFlight !== token) return; // the connection dropped meanwhile: resent already
    this._inFlight = null;
    let answers = batch.length === 1 ? [answer] : answer;
    let pause = true;
    if (error) {
      answers = batch.map(() => ({ ok: false, error: "no answer" }));
    } else if (!Array.isArray(answers)) {
      // The array as a whole was refused ("payload: must hold 1 to N messages"): from now
      // on one message per event, starting with these, at once.
      this.options.batchSize = 1;
      answers = batch.map(() => ({ ok: false, error: "no answer" }));
      pause = false;
    }
    let retry = false;
    for (const [index, record] of batch.entries()) {
      if (record.state !== "sent" || record.token !== token) continue; // settled meanwhile
      const result = answers[index] || { ok: false, error: "no answer" };
      if (result.ok) {
        this._accept(record, result.id);
      } else if (RETRYABLE.has(result.error) || result.error === "no answer") {
        record.state = "queued";
        retry = true;
        this._emit("state", record.msg_id, "queued", { error: result.error, retry: true });
      } else {
        this._settle(record, "refused", { error: String(result.error || "refused") });
      }
    }
    if (!retry) {
      this._retryAttempt = 0;
    } else if (pause) {
      this._pausedUntil = Date.now() + backoff(this._retryAttempt++, this.options.retryDelay,
        this.options.retryDelayMax);
    }
    this._flush();
  }

  _accept(record, id) {
    record.state = "accepted";
    record.id = id;
    record.acceptedAt = Date.now();
    removeFrom(this._outbox, record);
    this._awaiting.set(record.msg_id, record);
    this._persist(record);
    this._emit("state", record.msg_id, "accepted", { id });
  }

  /** A message's final state: "stored" (resolves its promise) or "refused" (rejects it). */
  _settle(record, state, detail) {
    record.state = state;
    this._records.delete(record.msg_id);
    this._awaiting.delete(record.msg_id);
    removeFrom(this._outbox, record);
    try {
      this._store?.delete(record.msg_id);
    } catch (error) {
      console.error("tributary: could not update the persisted outbox", error);
    }
    this._emit("state", record.msg_id, state, detail);
    if (state === "stored") {
      record.resolve({ msg_id: record.msg_id, id: detail.id ?? record.id });
    } else {
      record.reject(new TributaryError(detail.error, record.msg_id));
    }
  }

  _persist(record) {
    try {
      this._store?.put(record);
    } catch (error) {
      console.error("tributary: could not update the persisted outbox", error);
    }
  }

  // --- receipts that did not come ------------------------------------------------------------

  _askLate() {
    const before = Date.now() - this.options.receiptTimeout;
    this._askStatus([...this._awaiting.values()]
      .filter((record) => record.acceptedAt < before).map((record) => record.msg_id));
  }

  /** Ask the server whether these accepted messages are stored, dead or still pending. */
  _askStatus(msgIds) {
    for (let start = 0; start < msgIds.length && this._connected; start += STATUS_CHUNK) {
      const chunk = msgIds.slice(start, start + STATUS_CHUNK);
      this._socket.timeout(this.options.ackTimeout).emit("status", { msg_ids: chunk },
        (error, answer) => {
          if (error || !answer?.ok) return; // asked again at the next check
          for (const result of answer.results) {
            const record = this._records.get(result.msg_id);
            if (!record) continue;
            if (result.status === "stored") {
              this._settle(record, "stored", { id: result.id ?? record.id });
            } else if (result.status === "dead") {
              this._settle(record, "refused", { error: result.error, dead: true });
            } else if (record.state === "accepted") {
              record.acceptedAt = Date.now(); // still on its way: ask again later
            }
          }
        });
    }
  }

  // --- live aggregates -----------------------------------------------------------------------

  /** Subscribe on the server, once per connection; retried with backoff when the server
   * cannot answer now, dropped (with a "subscription" "refused" event) when it refuses. */
  _askSubscribe(subscription) {
    if (!this._connected || subscription.asked === this._connection ||
        this._subscriptions.get(subscription.key) !== subscription) return;
    const connection = this._connection;
    subscription.asked = connection;
    this._socket.timeout(this.options.ackTimeout).emit("subscribe", { key: subscription.key },
      (error, answer) => this._onSubscribed(subscription, connection, error, answer));
  }

  _onSubscribed(subscription, connection, error, answer) {
    if (connection !== this._connection || !this._connected) return; // asked again on the next
    const { key } = subscription;
    if (this._subscriptions.get(key) !== subscription) {
      // Ended while the server was answering (and not subscribed to again since).
      if (answer?.ok && !this._subscriptions.has(key)) this._socket.emit("unsubscribe", { key });
      return;
    }
    if (error || !answer?.ok) {
      const reason = error ? "no answer" : String(answer?.error || "refused");
      if (reason === "no answer" || RETRYABLE.has(reason)) {
        subscription.asked = 0;
        this._emit("subscription", key, "retrying", { error: reason });
        this._later(backoff(subscription.attempt++, this.options.retryDelay,
          this.options.retryDelayMax), () => this._askSubscribe(subscription));
      } else {
        this._subscriptions.delete(key);
        this._emit("subscription", key, "refused", { error: reason });
      }
      return;
    }
    subscription.attempt = 0;
    subscription.live = connection;
    this._emit("subscription", key, "subscribed", { stats: answer.stats ?? null });
    this._deliver(subscription, answer.stats ?? null);
  }

  /** Hand figures to the key's listeners. Aggregates only grow, so figures with fewer messages
   * than those already given are an older reading arriving late (another engine's, or one
   * crossing the subscribe answer) and are dropped; figures with as many are the same. */
  _deliver(subscription, stats) {
    const known = subscription.figures;
    if (known !== undefined && (stats === null || (known !== null &&
        stats.messages <= known.messages))) return;
    subscription.figures = stats;
    for (const { listener } of [...subscription.listeners]) {
      this._call("stats", listener, stats, subscription.key);
    }
  }

  _unsubscribe(subscription, entry) {
    if (!subscription.listeners.delete(entry) || subscription.listeners.size) return;
    if (this._subscriptions.get(subscription.key) !== subscription) return;
    this._subscriptions.delete(subscription.key);
    // Asked but not answered yet on this connection: the answer sends it (_onSubscribed).
    if (this._connected && subscription.live === this._connection) {
      this._socket.emit("unsubscribe", { key: subscription.key });
    }
  }

  // --- plumbing ------------------------------------------------------------------------------

  _emit(event, ...args) {
    for (const listener of this._listeners.get(event) || []) this._call(event, listener, ...args);
  }

  _call(event, listener, ...args) {
    try {
      listener(...args);
    } catch (error) {
      console.error(`tributary: a "${event}" listener failed`, error);
    }
  }

  _later(delay, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      if (!this._closed) fn();
    }, delay);
    this._timers.add(timer);
    return timer;
  }

  _every(interval, fn) {
    const tick = () => {
      fn();
      this._later(interval, tick);
    };
    return this._later(interval, tick);
  }
}

// --- helpers ---------------------------------------------------------------------------------

function normalize(message) {
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    throw new TypeError("tributary: send() takes an object {message, key, value, timestamp}");
  }
  for (const name of Object.keys(message)) {
    if (!MESSAGE_FIELDS.has(name)) {
      throw new TypeError(`tributary: unknown field ${JSON.stringify(name)}; a message has ` +
        "message, key, value and timestamp (the library adds msg_id)");
    }
  }
  if (typeof message.message !== "string") {
    throw new TypeError("tributary: message must be a string");
  }
  let timestamp = message.timestamp ?? new Date();
  if (timestamp instanceof Date) timestamp = timestamp.toISOString();
  const payload = { msg_id: newMsgId(), message: message.message, timestamp };
  if (message.value !== undefined && message.value !== null) payload.value = message.value;
  if (message.key !== undefined && message.key !== null) payload.key = message.key;
  return payload;
}

/** A msg_id unique across pages and reloads: time, then 96 random bits (35 characters of
 * the server's alphabet, A-Z a-z 0-9 _ . : -). */
function newMsgId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return `t${Date.now().toString(36)}-${hex}`;
}

/** The server's reason for a refused connection, or null for a network failure. */
function refusal(error) {
  if (error?.type === "TransportError") {
    // The long-polling handshake of a refused origin carries the reason in its body (CORS
    // headers included, so the page can read it); read it before socket.io aborts the request.
    const body = error.context?.responseText;
    if (error.description === 403 && body) {
      try {
        return String(JSON.parse(body).error || "forbidden");
      } catch {
        return "forbidden";
      }
    }
    return null;
  }
  return error?.message ? String(error.message) : null;
}

function backoff(attempt, first, cap) {
  const ceiling = Math.min(cap, first * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + Math.random() * ceiling / 2; // "equal jitter"
}

function removeFrom(list, item) {
  const index = list.indexOf(item);
  if (index >= 0) list.splice(index, 1);
}

/** The claims of a JWT, unverified (the server verifies); null when it is not one. */
function claimsOf(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")));
  } catch {
    return null;
  }
}

function subject(token) {
  return claimsOf(token)?.sub || "anonymous";
}

// --- persistence -----------------------------------------------------------------------------
//
// A store keeps one entry per message not yet stored: {msg_id, seq, payload, state, id}.
// Its namespace is the server and the user (the token's subject), so another account on the
// same page never sends this one's messages. `load()` may return a promise; `put` and
// `delete` may throw (a full quota), which send() reports as "outbox full".

function openStore(persist, url, user) {
  if (!persist) return null;
  if (typeof persist === "object") return persist;
  const namespace = `tributary:${url || globalThis.location?.origin || ""}:${user}:`;
  if (persist === "indexedDB") return new IndexedDBStore(namespace);
  if (persist === true || persist === "localStorage") {
    if (!globalThis.localStorage) throw new TypeError("tributary: persist needs localStorage");
    return new LocalStore(globalThis.localStorage, namespace);
  }
  throw new TypeError(`tributary: persist must be true, "localStorage" or "indexedDB"`);
}

function saved(record) {
  return { msg_id: record.msg_id, seq: record.seq, payload: record.payload,
    state: record.state === "accepted" ? "accepted" : "queued", id: record.id };
}

/** localStorage: written before send() returns, so even a tab that crashes right after keeps
 * the message. About 5 MB per origin. */
export class LocalStore {
  constructor(storage, namespace) {
    this.storage = storage;
    this.prefix = namespace;
  }

  load() {
    const records = [];
    for (let index = 0; index < this.storage.length; index++) {
      const key = this.storage.key(index);
      if (!key?.startsWith(this.prefix)) continue;
      try {
        records.push(JSON.parse(this.storage.getItem(key)));
      } catch {
        // not one of ours after all
      }
    }
    return records.sort((a, b) => a.seq - b.seq);
  }

  put(record) {
    this.storage.setItem(this.prefix + record.msg_id, JSON.stringify(saved(record)));
  }

  delete(msgId) {
    this.storage.removeItem(this.prefix + msgId);
  }
}

/** IndexedDB: far more room than localStorage, but written asynchronously, so a message is
 * safe from a reload only once its write has completed (a few milliseconds). */
export class IndexedDBStore {
  constructor(namespace) {
    this.namespace = namespace;
    this.db = new Promise((resolve, reject) => {
      const request = globalThis.indexedDB.open("tributary", 1);
      request.onupgradeneeded = () => {
        request.result.createObjectStore("outbox", { keyPath: "key" })
          .createIndex("namespace", "namespace");
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  async load() {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const request = db.transaction("outbox").objectStore("outbox").index("namespace")
        .getAll(this.namespace);
      request.onsuccess = () => resolve(request.result.map((row) => row.record)
        .sort((a, b) => a.seq - b.seq));
      request.onerror = () => reject(request.error);
    });
  }

  put(record) {
    this._write((store) => store.put({ key: this.namespace + record.msg_id,
      namespace: this.namespace, record: saved(record) }));
  }

  delete(msgId) {
    this._write((store) => store.delete(this.namespace + msgId));
  }

  _write(change) {
    this.db.then((db) => {
      const transaction = db.transaction("outbox", "readwrite");
      change(transaction.objectStore("outbox"));
      transaction.onerror = () => console.error("tributary: IndexedDB write failed",
        transaction.error);
    });
  }
}
