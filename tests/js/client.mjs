// The real socket.io JavaScript client against a Tributary web process, for the Python tests.
//
// Usage: node client.mjs '<job as JSON>'
//   url          the web process, e.g. http://127.0.0.1:3000
//   token        the access token, sent as `auth: {token}`
//   transports   ["polling", "websocket"] (the browser default: polling, then upgrade) or
//                ["websocket"]
//   before       messages to send as soon as connected (before any upgrade)
//   messages     messages to send once on the final transport
//                each is {payload, ack}: with ack, the ack callback's answer is recorded;
//                without, the message is fire-and-forget and refusals arrive as `error` events
//   errors       how many `error` events to wait for before finishing (default 0)
//   localAddress the address to connect from (websocket transport; default: the system's)
//   retry        reconnect as the client does by default when the connection fails (fast
//                delays); transport failures are counted in `retries`
//
// Prints one JSON object: {connected, first_transport, transport, upgraded, acks, errors}, with
// `connect_error` (the server's reason) when the connection was refused.

import { io } from "socket.io-client";

const DEADLINE_MS = 15000;
const job = JSON.parse(process.argv[2]);
const result = { connected: false, upgraded: false, acks: [], errors: [] };

function finish(code) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

const timer = setTimeout(() => {
  result.timeout = true;
  finish(1);
}, DEADLINE_MS);

const socket = io(job.url, {
  auth: { token: job.token },
  transports: job.transports,
  reconnection: Boolean(job.retry),
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  timeout: DEADLINE_MS,
  localAddress: job.localAddress,
});
result.retries = 0;

socket.on("error", (error) => result.errors.push(error));

socket.io.on("open", () => {
  result.first_transport = socket.io.engine.transport.name;
  socket.io.engine.once("upgrade", () => { result.upgraded = true; });
});

socket.on("connect_error", (error) => {
  if (job.retry && socket.active) { // a transport failure: the client tries again itself
    result.retries++;
    result.retry_error = error.message;
    return;
  }
  result.connect_error = error.message;
  clearTimeout(timer);
  finish(0);
});

function send(messages) {
  return Promise.all(messages.map(({ payload, ack }) => {
    if (!ack) {
      socket.emit("data", payload);
      return null;
    }
    return socket.timeout(DEADLINE_MS).emitWithAck("data", payload);
  })).then((answers) => {
    result.acks.push(...answers.filter((answer) => answer !== null));
  });
}

function upgraded() {
  const engine = socket.io.engine;
  if (engine.transport.name === "websocket" || !job.transports.includes("websocket")) {
    return Promise.resolve();
  }
  return new Promise((resolve) => engine.once("upgrade", resolve));
}

function errorsArrived() {
  return new Promise((resolve) => {
    const check = () => {
      if (result.errors.length >= (job.errors || 0)) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}

socket.on("connect", async () => {
  result.connected = true;
  try {
    await send(job.before || []);
    await upgraded();
    result.transport = socket.io.engine.transport.name;
    await send(job.messages || []);
    await errorsArrived();
  } catch (error) {
    result.failure = String(error);
  }
  clearTimeout(timer);
  socket.disconnect();
  finish(result.failure ? 1 : 0);
});
