#!/usr/bin/env node
'use strict';
// Socket.IO load generator for Tributary (socket.io-client 4.x, protocol v4).
//
//   node bench/loadgen/loadgen.js --url http://127.0.0.1:5000 --clients 5000 \
//       --connect-rate 500 --mode rate --rate 1 --warmup 10 --duration 60
//
// Each client connects with its own engine.io connection (forceNew), sends
// {msg_id, message, user_id, timestamp} with an ack callback and records the
// ack latency. With --url a,b (comma-separated) client i connects to url i mod n,
// spreading the clients over several web processes. Only messages sent inside
// the measurement window (after the connect ramp and --warmup) are counted.
// Progress goes to stderr; one JSON object with the results goes to stdout.
// With --procs N the clients are split over N forked workers whose histograms
// are merged.

const { io } = require('socket.io-client');
const { sourceAddress } = require('./addresses');
const { fork } = require('child_process');
const fs = require('fs');
const { performance, monitorEventLoopDelay } = require('perf_hooks');

const DEFAULTS = {
  url: 'http://127.0.0.1:5000',
  clients: 100,
  'connect-rate': 200, // new connections per second (whole run)
  transports: 'websocket', // websocket | default (polling, then upgrade)
  mode: 'rate', // rate | closed
  rate: 1, // rate mode: messages per second per client (0 = stay idle)
  window: 1, // closed mode: messages awaiting ack per client
  duration: 30, // measurement window, seconds
  warmup: 5, // seconds after the connect ramp, excluded from stats
  event: 'data',
  'message-bytes': 64,
  'token-file': '',
  'user-prefix': 'user',
  procs: 1,
  'ack-timeout': 10, // seconds before an ack counts as never arrived
  'connect-timeout': 20, // seconds
  'acked-file': '', // append the msg_id of every message acknowledged ok, one per line
  'per-address': 0, // clients per source address, from --address-base on (0: the system's choice)
  'address-base': '127.1.0.1',
};

const USAGE = `usage: node loadgen.js [--option value ...]
options (default):
${Object.entries(DEFAULTS).map(([k, v]) => `  --${k} (${v === '' ? 'none' : v})`).join('\n')}`;

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    let [key, val] = argv[i].replace(/^--/, '').split(/=(.*)/s);
    if (argv[i] === '--help' || argv[i] === '-h') { console.log(USAGE); process.exit(0); }
    if (!argv[i].startsWith('--') || !(key in DEFAULTS)) die(`unknown option ${argv[i]}\n${USAGE}`);
    if (val === undefined) val = argv[++i];
    if (val === undefined) die(`missing value for --${key}`);
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(val) : val;
    if (Number.isNaN(opts[key])) die(`--${key} expects a number`);
  }
  if (!['rate', 'closed'].includes(opts.mode)) die('--mode must be rate or closed');
  if (!['websocket', 'default'].includes(opts.transports)) die('--transports must be websocket or default');
  opts.procs = Math.max(1, Math.min(opts.procs, opts.clients));
  return opts;
}

function die(msg) { process.stderr.write(msg + '\n'); process.exit(2); }
const now = () => performance.timeOrigin + performance.now(); // ms, comparable across processes
const bump = (obj, key, n = 1) => { obj[key] = (obj[key] || 0) + n; };
const log = (msg) => process.stderr.write(`[loadgen] ${msg}\n`);

// Log-bucketed latency histogram: bucket i holds values in (1.01^(i-1), 1.01^i] microseconds,
// so percentiles are exact to within 1% and histograms from several processes merge by addition.
const H_GROWTH = Math.log(1.01);
const H_SIZE = 2100; // up to ~1.01^2100 us, i.e. far beyond any ack timeout
class Histogram {
  constructor(src) {
    this.counts = src ? src.counts.slice() : new Array(H_SIZE).fill(0);
    this.n = src ? src.n : 0;
    this.sum = src ? src.sum : 0;
    this.max = src ? src.max : 0;
  }
  add(ms) {
    const i = Math.min(H_SIZE - 1, Math.max(0, Math.ceil(Math.log(Math.max(ms * 1000, 1)) / H_GROWTH)));
    this.counts[i]++;
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  merge(other) {
    for (let i = 0; i < H_SIZE; i++) this.counts[i] += other.counts[i];
    this.n += other.n;
    this.sum += other.sum;
    this.max = Math.max(this.max, other.max);
  }
  percentile(p) {
    if (this.n === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.n));
    let seen = 0;
    for (let i = 0; i < H_SIZE; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(Math.exp(i * H_GROWTH) / 1000, this.max);
    }
    return this.max;
  }
  summary() {
    const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
    return {
      p50: r(this.percentile(50)), p90: r(this.percentile(90)), p99: r(this.percentile(99)),
      max: r(this.n ? this.max : null), mean: r(this.n ? this.sum / this.n : null), n: this.n,
    };
  }
}

// ---------------------------------------------------------------------------
// Worker: owns clients [first, first + count) and reports to the coordinator
// through send({type: 'ready' | 'progress' | 'stats'}); receives the window.
function runWorker(opts, first, count, send, onWindow) {
  const tokens = opts['token-file']
    ? fs.readFileSync(opts['token-file'], 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)
    : null;
  if (tokens && tokens.length === 0) die('--token-file has no tokens');
  const body = 'x'.repeat(opts['message-bytes']);
  const ackTimeoutMs = opts['ack-timeout'] * 1000;
  const transports = opts.transports === 'websocket' ? ['websocket'] : ['polling', 'websocket'];
  const connectRate = opts['connect-rate'] / opts.procs;
  const urls = opts.url.split(',').map((u) => u.trim()).filter(Boolean);

  const st = {
    sent: 0, acked: 0, ok: 0, otherAcks: 0, notOk: {}, ackErrors: {}, timeouts: 0, inflight: 0,
    connectErrors: {}, disconnects: {}, skippedNotConnected: 0,
  };
  const hist = new Histogram();
  const connectHist = new Histogram();
  const ackedIds = opts['acked-file'] ? [] : null; // in or out of the window
  let winStart = Infinity, winEnd = Infinity, stopping = false;
  let connected = 0, settled = 0, progAcked = 0, progSent = 0, cpuAtStart = null, cpuUsed = null;
  const clients = [];
  const EL_RESOLUTION_MS = 10;
  const elDelay = monitorEventLoopDelay({ resolution: EL_RESOLUTION_MS });

  function emitOne(c) {
    if (stopping) return;
    if (!c.s.connected) { st.skippedNotConnected++; return; }
    const t0 = now();
    if (t0 >= winEnd) return;
    const inWin = t0 >= winStart;
    if (inWin) { st.sent++; st.inflight++; }
    progSent++;
    const payload = { msg_id: `${c.i}-${c.seq++}`, message: body, user_id: c.user, timestamp: new Date().toISOString() };
    c.s.timeout(ackTimeoutMs).emit(opts.event, payload, (err, resp) => {
      progAcked += err ? 0 : 1;
      if (ackedIds && !err && resp && resp.ok === true) ackedIds.push(payload.msg_id);
      if (inWin) {
        st.inflight--;
        if (err) {
          st.timeouts++;
          bump(st.ackErrors, err.message);
        } else {
          st.acked++;
          hist.add(now() - t0);
          if (resp && resp.ok === true) st.ok++;
          else if (resp && resp.ok === false) bump(st.notOk, String(resp.error));
          else st.otherAcks++; // ack without an ok field (e.g. the bare baseline server)
        }
      }
      if (opts.mode === 'closed') emitOne(c);
    });
  }

  function startSending(c) {
    if (opts.mode === 'closed') {
      for (let k = 0; k < opts.window; k++) emitOne(c);
    } else if (opts.rate > 0) {
      const interval = 1000 / opts.rate;
      c.timer = setTimeout(() => {
        c.timer = setInterval(() => emitOne(c), interval);
        emitOne(c);
      }, Math.random() * interval); // jittered start
    }
  }

  function settle(c) { // a client's connection attempt is over, whatever its outcome
    if (!c.settled) { c.settled = true; settled++; }
  }

  function startClient(i) {
    const c = { i, seq: 0, user: `${opts['user-prefix']}${i}`, timer: null, t0: now(), everConnected: false, settled: false, connected: false };
    c.s = io(urls[i % urls.length], {
      transports,
      forceNew: true, // one engine.io connection per client, no multiplexing
      reconnection: false,
      timeout: opts['connect-timeout'] * 1000,
      auth: tokens ? { token: tokens[i % tokens.length] } : undefined,
      localAddress: sourceAddress(i, opts['per-address'], opts['address-base']),
    });
    c.s.on('connect', () => {
      connected++;
      c.connected = true;
      if (!c.everConnected) { c.everConnected = true; settle(c); connectHist.add(now() - c.t0); }
      startSending(c);
    });
    c.s.on('connect_error', (err) => {
      settle(c);
      bump(st.connectErrors, err.message);
    });
    c.s.on('disconnect', (reason) => {
      if (c.connected) { connected--; c.connected = false; }
      clearTimeout(c.timer); clearInterval(c.timer);
      if (!c.everConnected) { // the server closed the connection before the client had joined
        settle(c);
        bump(st.connectErrors, `closed before joining: ${reason}`);
      } else if (!stopping) bump(st.disconnects, reason);
    });
    clients.push(c);
  }

  // Connect ramp, then tell the coordinator we are ready.
  const rampStart = now();
  let next = 0;
  const ramp = setInterval(() => {
    const due = Math.min(count, Math.floor(((now() - rampStart) / 1000) * connectRate) + 1);
    while (next < due) startClient(first + next++);
    if (next >= count && settled >= count) {
      clearInterval(ramp);
      send({ type: 'ready', connected, rampSeconds: (now() - rampStart) / 1000 });
    }
  }, 5);

  const progress = setInterval(() => {
    send({ type: 'progress', connected, settled, sent: progSent, acked: progAcked, inflight: st.inflight });
    progSent = 0; progAcked = 0;
  }, 1000);

  onWindow((start, end) => {
    winStart = start; winEnd = end;
    setTimeout(() => { cpuAtStart = process.cpuUsage(); elDelay.enable(); }, Math.max(0, start - now()));
    setTimeout(finish, Math.max(0, end - now()));
  });

  function finish() {
    cpuUsed = process.cpuUsage(cpuAtStart);
    elDelay.disable();
    const connectedAtEnd = connected;
    const deadline = now() + ackTimeoutMs + 2000;
    const drain = setInterval(() => { // wait for acks of in-window messages (or their timeouts)
      if (st.inflight > 0 && now() < deadline) return;
      clearInterval(drain); clearInterval(progress);
      stopping = true;
      for (const c of clients) { clearTimeout(c.timer); clearInterval(c.timer); c.s.disconnect(); }
      if (ackedIds && ackedIds.length) fs.appendFileSync(opts['acked-file'], ackedIds.join('\n') + '\n');
      const windowMs = winEnd - winStart;
      send({
        type: 'stats',
        stats: { ...st, connectedAtEnd },
        hist, connectHist,
        cpuPct: ((cpuUsed.user + cpuUsed.system) / 1000 / windowMs) * 100,
        // the sampler's own interval is included in its readings; report only the lag beyond it
        elDelayP99: Math.max(0, elDelay.percentile(99) / 1e6 - EL_RESOLUTION_MS),
        elDelayMax: Math.max(0, elDelay.max / 1e6 - EL_RESOLUTION_MS),
      });
    }, 20);
  }
}

// ---------------------------------------------------------------------------
// Coordinator: starts workers, opens the window once every worker finished its
// connect ramp, merges the results and prints them.
function coordinate(opts) {
  const workers = [];
  const perProc = Math.ceil(opts.clients / opts.procs);
  for (let k = 0; k < opts.procs; k++) {
    const first = k * perProc, count = Math.min(perProc, opts.clients - first);
    if (count <= 0) break;
    const w = { ready: null, progress: {}, result: null, windowCb: null };
    if (opts.procs === 1) {
      runWorker(opts, first, count, (m) => onMessage(w, m), (cb) => { w.windowCb = cb; });
      w.startWindow = (s, e) => w.windowCb(s, e);
    } else {
      const child = fork(__filename, [], { env: { ...process.env, LOADGEN_WORKER: JSON.stringify({ opts, first, count }) } });
      child.on('message', (m) => onMessage(w, m));
      child.on('exit', (code) => { if (!w.result) die(`worker ${k} exited with code ${code}`); });
      w.startWindow = (s, e) => child.send({ type: 'window', start: s, end: e });
    }
    workers.push(w);
  }
  let winStart = null, winEnd = null, rampSeconds = 0;

  function onMessage(w, m) {
    if (m.type === 'progress') { w.progress = m; return; }
    if (m.type === 'ready') {
      w.ready = m;
      rampSeconds = Math.max(rampSeconds, m.rampSeconds);
      if (workers.every((x) => x.ready) && winStart === null) {
        const conn = workers.reduce((a, x) => a + x.ready.connected, 0);
        log(`ramp done in ${rampSeconds.toFixed(1)}s: ${conn}/${opts.clients} connected; warmup ${opts.warmup}s`);
        winStart = now() + opts.warmup * 1000;
        winEnd = winStart + opts.duration * 1000;
        setTimeout(() => log('window start'), winStart - now());
        setTimeout(() => log('window end'), winEnd - now());
        for (const x of workers) x.startWindow(winStart, winEnd);
      }
      return;
    }
    if (m.type === 'stats') {
      w.result = m;
      if (workers.every((x) => x.result)) report();
    }
  }

  const progress = setInterval(() => {
    const sum = (k) => workers.reduce((a, x) => a + (x.progress[k] || 0), 0);
    log(`connected=${sum('connected')} settled=${sum('settled')}/${opts.clients} sent/s=${sum('sent')} acked/s=${sum('acked')} inflight(window)=${sum('inflight')}`);
  }, 1000);

  function report() {
    clearInterval(progress);
    const hist = new Histogram(), connectHist = new Histogram();
    const tot = { sent: 0, acked: 0, ok: 0, otherAcks: 0, timeouts: 0, skippedNotConnected: 0, connectedAtEnd: 0 };
    const maps = { notOk: {}, ackErrors: {}, connectErrors: {}, disconnects: {} };
    for (const w of workers) {
      const r = w.result;
      hist.merge(r.hist);
      connectHist.merge(r.connectHist);
      for (const k of Object.keys(tot)) tot[k] += r.stats[k];
      for (const k of Object.keys(maps)) for (const [e, n] of Object.entries(r.stats[k])) bump(maps[k], e, n);
    }
    const secs = (winEnd - winStart) / 1000;
    const r1 = (x) => Math.round(x * 10) / 10;
    const out = {
      config: opts,
      clients: opts.clients,
      connected_at_window_start: workers.reduce((a, x) => a + x.ready.connected, 0),
      connected_at_window_end: tot.connectedAtEnd,
      ramp_seconds: r1(rampSeconds),
      window_seconds: secs,
      sent: tot.sent,
      sent_per_s: r1(tot.sent / secs),
      acked: tot.acked,
      acked_per_s: r1(tot.acked / secs),
      ok: tot.ok,
      not_ok: maps.notOk, // acks with ok:false, by error string
      other_acks: tot.otherAcks, // acks without an ok field
      timeouts: tot.timeouts, // acks that never arrived (timed out, or the socket disconnected first)
      ack_errors: maps.ackErrors,
      latency_ms: hist.summary(),
      connect_ms: connectHist.summary(),
      connect_errors: maps.connectErrors,
      disconnects: maps.disconnects,
      skipped_not_connected: tot.skippedNotConnected,
      loadgen: {
        procs: workers.length,
        cpu_pct: r1(workers.reduce((a, x) => a + x.result.cpuPct, 0)),
        cpu_pct_per_proc: workers.map((x) => r1(x.result.cpuPct)),
        event_loop_delay_p99_ms: r1(Math.max(...workers.map((x) => x.result.elDelayP99))),
        event_loop_delay_max_ms: r1(Math.max(...workers.map((x) => x.result.elDelayMax))),
      },
    };
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
  }
}

if (process.env.LOADGEN_WORKER) {
  const { opts, first, count } = JSON.parse(process.env.LOADGEN_WORKER);
  let windowCb = null;
  process.on('message', (m) => { if (m.type === 'window') windowCb(m.start, m.end); });
  process.on('disconnect', () => process.exit(1)); // coordinator went away
  runWorker(opts, first, count, (m) => {
    if (m.type === 'stats') process.send(m, () => process.exit(0));
    else process.send(m);
  }, (cb) => { windowCb = cb; });
} else {
  coordinate(parseArgs(process.argv.slice(2)));
}
