#!/usr/bin/env bash
# Make sure the Redis and MySQL/MariaDB the tests use are reachable, and the tools the tests run
# installed: Chromium, Prometheus and promtool, docker-compose.
#
# TEST_REDIS_URL and TEST_DATABASE_URL default to the local services. When they point at this
# machine and do not answer, this starts them if they are installed but stopped, and installs
# them from Debian's packages if they are missing and we run as root. Remote services are only
# checked, never managed.
set -euo pipefail
PYTHON=${PYTHON:-python3}
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
DATABASE_URL=${TEST_DATABASE_URL:-mysql+pymysql://root@127.0.0.1:3306/tributary_test}
APT_UPDATED=""

say() { echo "ensure-services: $*" >&2; }

redis_up() {
  "$PYTHON" - "$REDIS_URL" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, socket_timeout=2).ping()
PY
}

mysql_up() {
  "$PYTHON" - "$DATABASE_URL" <<'PY' >/dev/null 2>&1
import sys
import pymysql
from sqlalchemy.engine import make_url
u = make_url(sys.argv[1])
pymysql.connect(host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                password=u.password or "", connect_timeout=2).close()
PY
}

is_local() { case "$1" in *://*@127.0.0.1*|*://127.0.0.1*|*://*@localhost*|*://localhost*) return 0;; *) return 1;; esac; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "cannot install $* (not root); install it or point the TEST_* URL at a running server"
    return 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && APT_UPDATED=1
  fi
  say "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for <check-function> <what> <seconds>
  local deadline=$(( $(date +%s) + $3 ))
  until "$1"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then say "$2 did not come up within $3 s"; return 1; fi
    sleep 0.2
  done
}

if ! redis_up; then
  is_local "$REDIS_URL" || { say "Redis at $REDIS_URL is unreachable"; exit 1; }
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --maxmemory-policy noeviction >/dev/null
  wait_for redis_up Redis 20
fi

if ! mysql_up; then
  is_local "$DATABASE_URL" || { say "database at $DATABASE_URL is unreachable"; exit 1; }
  installed_now=""
  if [ ! -x /usr/sbin/mariadbd ] && ! command -v mysqld >/dev/null; then
    apt_install mariadb-server
    installed_now=1
  fi
  say "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for mysql_up MariaDB 60 || {
    # A fresh Debian install lets root in through the Unix socket only; allow the empty
    # password over TCP too, as the test URL expects (only for a server we installed now).
    if [ -n "$installed_now" ]; then
      mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
      wait_for mysql_up MariaDB 10
    else
      exit 1
    fi
  }
fi
# The browser tests drive Debian's Chromium (never a browser Playwright would download).
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium || say "without Chromium the browser tests skip (and fail in CI)"
fi

# The dashboard and deployment tests run Prometheus and promtool (the alert rules, a live
# scrape) and docker-compose (validating docker-compose.yml; no Docker engine needed).
tools=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || tools+=(prometheus)
command -v docker-compose >/dev/null || tools+=(docker-compose)
if [ ${#tools[@]} -gt 0 ]; then
  apt_install "${tools[@]}" || say "without ${tools[*]} the dashboard and deployment tests skip (and fail in CI)"
fi
say "Redis, the database, Chromium, Prometheus and docker-compose are ready"
