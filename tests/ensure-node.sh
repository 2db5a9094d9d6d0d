#!/usr/bin/env bash
# Node.js and npm run the real socket.io JavaScript client in the tests and the load generator.
# Install them from Debian's packages when missing and running as root.
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-node: node and npm are required (socket.io-client tests); install them" >&2
  exit 1
fi
echo "ensure-node: installing nodejs and npm from Debian's packages" >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
