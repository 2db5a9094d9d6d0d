#!/usr/bin/env node
'use strict';
// Reconnect storm: every client connects at the same moment, as after a web process restart.
//
//   node bench/loadgen/storm.js --url http://127.0.0.1:5000 --clients 5000 \
//       --token-file tokens.txt --procs 2
//
// Each client is a standard socket.io-client 4 socket (its own engine.io connection, websocket
// transport, reconnection on with the client's default backoff), created together at one
// start time shared by every worker. A client is done once it connected, or once the server
// refused it in its connect handler (`connect_error` with `socket.active` false: the standard
// client does not retry that, its user stays offline). A transport-level failure (the
// connection refused, reset or timed out) is retried by the client itself and only counted.
// One JSON object goes to stdout: time until all connected, connect latency from the start
// (p50/p90/p99/max), refusals by message, retries by reason.

const { io } = require('socket.io-client');
const { sourceAddress } = require('./addresses');
const { fork } = require('child_process');
const fs = require('fs');
const { performance } = require('perf_hooks');

const DEFAULTS = {
  url: 'http://127.0.0.1:5000',
  clients: 1000,
  'token-file': '',
  procs: 1,
  timeout: 60, // seconds after the start before the clients still trying are given up
  'hold': 2, // seconds every client stays connected after the last one settled
  'per-address': 0, // clients per source address, from --address-base on (0: the system's choice)
  'address-base': '127.1.0.1',
};

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!argv[i].startsWith('--') || !(key in DEFAULTS)) die(`unknown option ${argv[i]}`);
    const val = argv[++i];
    if (val === undefined) die(`missing value for --${key}`);
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(val) : val;
    if (Number.isNaN(opts[key])) die(`--${key} expects a number`);
  }
  opts.procs = Math.max(1, Math.min(opts.procs, opts.clients));
  return opts;
}

function die(msg) { process.stderr.write(msg + '\n'); process.exit(2); }
const now = () => performance.timeOrigin + performance.now(); // ms, comparable across processes
const bump = (obj, key, n = 1) => { obj[key] = (obj[key] || 0) + n; };
const log = (msg) => process.stderr.write(`[storm] ${msg}\n`);

// Worker: clients [first, first + count), all created at the start time the coordinator sends
// once every worker is ready; reports when each settled.
function runWorker(opts, first, count, send, onStart) {
  const tokens = opts['token-file']
    ? fs.readFileSync(opts['token-file'], 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)
    : null;
  const st = { connectMs: [], refused: {}, retries: {}, disconnects: {} };
  const sockets = [];
  let settled = 0, connected = 0, finished = false;

  function settle() {
    settled++;
    if (settled === count) finish();
  }

  function finish() {
    if (finished) return;
    finished = true;
    clearTimeout(giveUp);
    send({ type: 'settled', connected });
    setTimeout(() => {
      for (const s of sockets) s.disconnect();
      send({ type: 'stats', stats: { ...st, clients: count, connected, unsettled: count - settled } });
    }, opts.hold * 1000);
  }

  let giveUp = null, start = null;
  const storm = () => {
    for (let i = first; i < first + count; i++) {
      const s = io(opts.url, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: true, // the client's defaults: 1 s doubling to 5 s, randomized
        auth: tokens ? { token: tokens[i % tokens.length] } : undefined,
        localAddress: sourceAddress(i, opts['per-address'], opts['address-base']),
      });
      let done = false, up = false;
      s.on('connect', () => {
        connected++;
        up = true;
        if (!done) { done = true; st.connectMs.push(now() - start); settle(); }
      });
      s.on('connect_error', (err) => {
        if (s.active) { bump(st.retries, err.message); return; } // the client retries by itself
        bump(st.refused, err.message);
        if (!done) { done = true; settle(); }
      });
      s.on('disconnect', (reason) => {
        if (!up) return;
        up = false;
        connected--;
        if (!finished) bump(st.disconnects, reason);
      });
      sockets.push(s);
    }
  };
  onStart((at) => {
    start = at;
    setTimeout(storm, Math.max(0, start - now()));
    giveUp = setTimeout(finish, Math.max(0, start - now()) + opts.timeout * 1000);
  });
  setInterval(() => send({ type: 'progress', connected, settled }), 1000).unref();
  send({ type: 'ready' });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function coordinate(opts) {
  const perProc = Math.ceil(opts.clients / opts.procs);
  const workers = [];
  for (let k = 0; k < opts.procs; k++) {
    const first = k * perProc, count = Math.min(perProc, opts.clients - first);
    if (count <= 0) break;
    const w = { progress: {}, result: null, ready: false, start: null };
    const onMessage = (m) => {
      if (m.type === 'ready') {
        w.ready = true;
        if (workers.length === Math.ceil(opts.clients / perProc) && workers.every((x) => x.ready)) {
          const at = now() + 100;
          for (const x of workers) x.start(at);
        }
      } else if (m.type === 'progress') w.progress = m;
      else if (m.type === 'stats') { w.result = m.stats; if (workers.every((x) => x.result)) report(); }
    };
    workers.push(w);
    if (opts.procs === 1) {
      runWorker(opts, first, count, onMessage, (cb) => { w.start = cb; });
    } else {
      const child = fork(__filename, [], { env: { ...process.env, STORM_WORKER: JSON.stringify({ opts, first, count }) } });
      w.start = (at) => child.send({ type: 'start', at });
      child.on('message', onMessage);
      child.on('exit', (code) => { if (!w.result) die(`worker ${k} exited with code ${code}`); });
    }
  }
  const progress = setInterval(() => {
    const sum = (key) => workers.reduce((a, x) => a + (x.progress[key] || 0), 0);
    log(`connected=${sum('connected')} settled=${sum('settled')}/${opts.clients}`);
  }, 1000);

  function report() {
    clearInterval(progress);
    const times = [], refused = {}, retries = {}, disconnects = {};
    let unsettled = 0;
    for (const { result: r } of workers) {
      times.push(...r.connectMs);
      unsettled += r.unsettled;
      for (const [k, n] of Object.entries(r.refused)) bump(refused, k, n);
      for (const [k, n] of Object.entries(r.retries)) bump(retries, k, n);
      for (const [k, n] of Object.entries(r.disconnects)) bump(disconnects, k, n);
    }
    times.sort((a, b) => a - b);
    const r2 = (x) => (x === null ? null : Math.round(x * 100) / 100);
    const out = {
      clients: opts.clients,
      connected: times.length,
      refused: Object.values(refused).reduce((a, n) => a + n, 0),
      refused_by_message: refused,
      unsettled, // still retrying when --timeout ran out
      retries, // transport-level failures the client retried by itself, by reason
      disconnects_after_connect: disconnects,
      all_connected_s: times.length === opts.clients ? r2(times[times.length - 1] / 1000) : null,
      connect_ms: { p50: r2(percentile(times, 50)), p90: r2(percentile(times, 90)),
        p99: r2(percentile(times, 99)), max: r2(times.length ? times[times.length - 1] : null) },
      procs: workers.length,
    };
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
  }
}

if (process.env.STORM_WORKER) {
  const { opts, first, count } = JSON.parse(process.env.STORM_WORKER);
  let startCb = null;
  process.on('message', (m) => { if (m.type === 'start') startCb(m.at); });
  process.on('disconnect', () => process.exit(1));
  runWorker(opts, first, count, (m) => {
    if (m.type === 'stats') process.send(m, () => process.exit(0));
    else process.send(m);
  }, (cb) => { startCb = cb; });
} else {
  coordinate(parseArgs(process.argv.slice(2)));
}
