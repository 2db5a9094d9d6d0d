#!/usr/bin/env node
'use strict';
// The storm baseline: a Node socket.io 4 server (pinned in package.json) whose connection
// handler does nothing. `node bench/loadgen/noop_server.js PORT`; SIGTERM stops it.

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: node noop_server.js PORT\n');
  process.exit(2);
}
const server = http.createServer();
const io = new Server(server);
io.on('connection', () => {});
server.listen(port, '127.0.0.1', () => process.stderr.write(`listening on ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
