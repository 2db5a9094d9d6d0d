'use strict';
// Source addresses for benchmark clients: on loopback every 127.0.0.0/8 address is the
// machine's own, so clients can come from many addresses, as real ones do (a web process limits
// new connections per address). Client i of a run with `perAddress` clients per address comes
// from `base` + floor(i / perAddress); with perAddress 0 the system picks (127.0.0.1).

function toInt(address) {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${address}`);
  }
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
}

function toAddress(n) {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

// The localAddress option of client i (undefined: the system's choice).
function sourceAddress(i, perAddress, base) {
  if (!perAddress) return undefined;
  return toAddress(toInt(base) + Math.floor(i / perAddress));
}

module.exports = { sourceAddress };
