// Many clients running tributary.js in Node: the library pages use (webapp/static/tributary.js,
// imported as it is), given the socket.io client's `io` from this directory's node_modules.
// Used by `python -m bench faults` (bench/library.py), which kills the web process while
// these clients send.
//
//   node bench/loadgen/library_clients.mjs '<job as JSON>'
//     url         the web process
//     tokenFile   one access token per line; client i uses line i
//     clients     how many clients (one connection each)
//     rate        messages per second per client
//     duration    seconds of sending
//     settle      seconds to wait, after sending stops, for every message to be stored
//     out         file to write every generated msg_id to, one "user msg_id" per line
//
// Prints one JSON object: generated, stored, refused (by reason), unsettled, connection
// events (by status), and how long the wait for the last receipts took.

import { readFileSync, writeFileSync } from "node:fs";
import { io } from "socket.io-client";
import { connect } from "../../webapp/static/tributary.js";

const job = JSON.parse(process.argv[2]);
const tokens = readFileSync(job.tokenFile, "utf8").split("\n").filter(Boolean);
const report = { generated: 0, stored: 0, refused: {}, unsettled: 0, connection: {},
  sending_seconds: job.duration };
const generated = [];

function log(message) {
  process.stderr.write(`[clients ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function subjectOf(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).sub;
}

const clients = [];
for (let index = 0; index < job.clients; index++) {
  const token = tokens[index % tokens.length];
  const user = subjectOf(token);
  const client = connect(job.url, { token, io, transports: ["websocket"] });
  client.on("state", (msgId, state) => {
    if (state === "stored") report.stored += 1;
  });
  client.on("connection", (status) => {
    report.connection[status] = (report.connection[status] || 0) + 1;
  });
  clients.push({ client, user, sequence: 0 });
}

function sendOne(entry) {
  entry.sequence += 1;
  report.generated += 1;
  entry.client.send({ message: `message ${entry.sequence} of ${entry.user}`,
    value: entry.sequence, key: "bench" }).catch((error) => {
    report.refused[error.reason] = (report.refused[error.reason] || 0) + 1;
  });
}

// Every msg_id, as send() reports it queued.
for (const entry of clients) {
  entry.client.on("state", (msgId, state, detail) => {
    if (state === "queued" && !detail.error) generated.push(`${entry.user} ${msgId}`);
  });
}

// Each client sends at `rate`, starting at a random offset so that sends spread evenly.
const interval = 1000 / job.rate;
const started = Date.now();
const timers = clients.map((entry) => setTimeout(function tick() {
  if (Date.now() - started >= job.duration * 1000) return;
  sendOne(entry);
  entry.timer = setTimeout(tick, interval);
}, Math.random() * interval));

const progress = setInterval(() => {
  const outbox = clients.reduce((sum, { client }) => sum + client.pending(), 0);
  const unconfirmed = clients.reduce((sum, { client }) => sum + client.unconfirmed(), 0);
  log(`generated ${report.generated}, stored ${report.stored}, outbox ${outbox}, ` +
    `accepted awaiting receipt ${unconfirmed}`);
}, 2000);

setTimeout(async () => {
  timers.forEach(clearTimeout);
  clients.forEach((entry) => clearTimeout(entry.timer));
  log("sending stopped; waiting for every message to be stored");
  const waitStarted = Date.now();
  const unsettled = () => clients.reduce(
    (sum, { client }) => sum + client.pending() + client.unconfirmed(), 0);
  while (unsettled() > 0 && Date.now() - waitStarted < job.settle * 1000) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  report.settled_after_s = Math.round((Date.now() - waitStarted) / 100) / 10;
  report.unsettled = unsettled();
  clearInterval(progress);
  writeFileSync(job.out, generated.join("\n") + "\n");
  clients.forEach(({ client }) => client.close());
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(0);
}, job.duration * 1000);
