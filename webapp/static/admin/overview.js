// The overview's live figures and charts: filled from the samples the page arrived with,
// then updated from the socket.io room "dashboard" (the cookie session authenticates the
// connection; it only listens). `overview` events carry a sample of the whole service every
// DASHBOARD_SAMPLE_INTERVAL; `stats` events are one engine's figures after each sweep.
import { io } from "/static/vendor/socket.io-client/socket.io.esm.min.js";

const root = document.getElementById("overview");
const minutes = Number(root.dataset.minutes);
const samples = JSON.parse(document.getElementById("samples").textContent);
const status = document.getElementById("live-status");

function show(name, value) {
  const cell = document.getElementById(`fig-${name}`);
  if (cell && value !== undefined) cell.textContent = value === null ? "–" : String(value);
}

function setStatus(text) {
  status.textContent = text;
  status.dataset.status = text;
}

function chart(element, series) {
  const opts = {
    width: Math.max(300, element.clientWidth), height: 220,
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  return new uPlot(opts, [[], ...series.map(() => [])], element);
}

const rates = chart(document.getElementById("chart-rates"),
                    [["accepted / s", "#1f77b4"], ["written / s", "#2ca02c"]]);
const backlog = chart(document.getElementById("chart-backlog"), [["backlog", "#d62728"]]);

function redraw() {
  const horizon = Date.now() / 1000 - minutes * 60;
  while (samples.length && samples[0].t < horizon) samples.shift();
  const t = samples.map((s) => s.t);
  rates.setData([t, samples.map((s) => s.accepted_per_s), samples.map((s) => s.rows_per_s)]);
  backlog.setData([t, samples.map((s) => s.backlog)]);
  root.dataset.points = String(samples.length);
}

function update(sample) {
  for (const [name, value] of Object.entries(sample)) show(name, value);
  document.getElementById("updated-at").textContent =
    new Date(sample.t * 1000).toLocaleTimeString();
  root.dataset.updated = String(sample.t);
}

if (samples.length) update(samples[samples.length - 1]);
redraw();

const socket = io({ transports: ["websocket"] });
socket.on("connect", () => setStatus("live"));
socket.on("disconnect", () => setStatus("disconnected"));
socket.on("connect_error", (err) => setStatus(`refused: ${err.message}`));
socket.on("session_ended", () => { setStatus("signed out"); window.location.reload(); });
socket.on("overview", (sample) => {
  samples.push(sample);
  update(sample);
  redraw();
});
socket.on("stats", (stats) => {
  show("last_batch_size", stats.last_batch_size);
  show("last_commit_ms", stats.last_commit_ms);
});
window.addEventListener("resize", () => {
  for (const plot of [rates, backlog]) {
    plot.setSize({ width: Math.max(300, plot.root.parentElement.clientWidth), height: 220 });
  }
});
