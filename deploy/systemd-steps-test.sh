#!/usr/bin/env bash
# The "Running under systemd" steps of docs/deploy.md, followed as written but with a throwaway
# user and a throwaway root directory instead of walrus-gateway and /: install the binary,
# create the system user, create /etc/walrus-gateway and install the certificate, key and env
# file with the documented owners and modes, create the StateDirectory as systemd would (owned
# by the user, 0700), then start deploy/walrus-gateway.service's ExecStart as that user (paths
# rewritten into the throwaway root, the embedded network instead of mainnet, loopback ports
# instead of 443). Checks that the gateway runs as the user, reads its TLS files, answers on the
# plain and HTTPS listeners, and that the old step (a root-only 750 directory) makes it fail.
#
# Needs root (useradd); re-runs itself with sudo when that works without a password, and
# otherwise prints SKIP and exits 0. Needs openssl and curl.
#
#   deploy/systemd-steps-test.sh                  # builds (or reuses) the debug binary
#   GATEWAY_BIN=... deploy/systemd-steps-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=GATEWAY_BIN,CARGO_TARGET_DIR "$0" "$@"
    fi
    echo "SKIP: deploy/systemd-steps-test.sh needs root (useradd) and sudo is not available" >&2
    exit 0
fi
for tool in openssl curl useradd userdel setpriv; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing" >&2; exit 1; }
done
if [ -z "${GATEWAY_BIN:-}" ]; then
    cargo build --locked -q -p walrus-gateway --bin walrus-gateway
    GATEWAY_BIN=${CARGO_TARGET_DIR:-target}/debug/walrus-gateway
fi

USER_NAME="wgtest$$"
ROOT=$(mktemp -d /tmp/walrus-systemd-steps.XXXXXX)
chmod 755 "$ROOT"
ETC=$ROOT/etc/walrus-gateway
STATE=$ROOT/var/lib/walrus-gateway
BIN=$ROOT/usr/local/bin
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    userdel "$USER_NAME" 2>/dev/null || true
    rm -rf "$ROOT"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The documented steps.
install -d -m 755 "$BIN" "$ROOT/var/lib"
install -m 755 "$GATEWAY_BIN" "$BIN/"
useradd --system --home "$STATE" --shell /usr/sbin/nologin "$USER_NAME"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$ROOT/key.pem" -out "$ROOT/cert.pem" 2>/dev/null
printf 'WALRUS_GATEWAY_ADMIN_TOKEN=systemd-steps-test\n' > "$ROOT/env"
install -d -m 750 -o root -g "$USER_NAME" "$ETC"
install -m 640 -o root -g "$USER_NAME" "$ROOT/cert.pem" "$ROOT/key.pem" "$ETC/"
install -m 600 -o root -g root "$ROOT/env" "$ETC/env"
# systemd's StateDirectory=walrus-gateway with StateDirectoryMode=0700.
install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "$STATE"

# The unit's ExecStart, rewritten into the throwaway root.
HTTP=$(free_port); HTTPS=$(free_port)
exec_start=$(awk '/^ExecStart=/ {on=1; sub(/^ExecStart=/, "")} on {line = line " " $0; if ($0 !~ /\\$/) on=0} END {print line}' \
    deploy/walrus-gateway.service | tr -d '\\')
exec_start=$(echo "$exec_start" | sed \
    -e "s|/usr/local/bin|$BIN|g" -e "s|/etc/walrus-gateway|$ETC|g" -e "s|/var/lib/walrus-gateway|$STATE|g" \
    -e "s|127.0.0.1:31415|127.0.0.1:$HTTP|" -e "s|\[::\]:443|127.0.0.1:$HTTPS|g" \
    -e "s|--network mainnet||" -e "s|--disk-cache [^ ]*|--disk-cache 1GiB|" -e "s|--memory-cache [^ ]*|--memory-cache 256MiB|")
read -r -a command <<< "$exec_start"
[ "${command[0]}" = "$BIN/walrus-gateway" ] || fail "unexpected ExecStart: $exec_start"

start_as_user() {
    # systemd reads EnvironmentFile as root, then drops to User=/Group=.
    (set -a; . "$ETC/env"; set +a
     exec setpriv --reuid "$USER_NAME" --regid "$USER_NAME" --init-groups "${command[@]}") \
        > "$ROOT/out" 2> "$ROOT/err" &
    PID=$!
}

# The old step: a root-only directory. The service user cannot read its key: it must fail.
chmod 750 "$ETC"; chgrp root "$ETC"
start_as_user
for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then fail "the gateway started although $ETC was root-only"; fi
wait "$PID" 2>/dev/null && fail "the gateway exited 0 with an unreadable $ETC" || true
PID=
grep -q "Permission denied" "$ROOT/err" || fail "no permission error with a root-only $ETC: $(cat "$ROOT/err")"
echo "root-only $ETC (the old step): the gateway fails: $(tail -1 "$ROOT/err")"
chgrp "$USER_NAME" "$ETC"

# The documented owners: it runs as the user and answers on both listeners.
start_as_user
for _ in $(seq 1 300); do grep -q '^listening on https://' "$ROOT/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^listening on https://' "$ROOT/out" || fail "the gateway did not start: $(cat "$ROOT/err")"
[ "$(ps -o user= -p "$PID" | tr -d ' ')" = "$USER_NAME" ] || fail "the gateway does not run as $USER_NAME"
curl -s -f -o /dev/null "http://127.0.0.1:$HTTP/status" || fail "no answer on the plain listener"
curl -s -f -o /dev/null --cacert "$ROOT/cert.pem" "https://127.0.0.1:$HTTPS/status" \
    || fail "no answer on the HTTPS listener"
curl -s -f -o /dev/null -H "authorization: Bearer systemd-steps-test" "http://127.0.0.1:$HTTP/admin/cache" \
    || fail "the admin token from the env file was not applied"
[ -n "$(find "$STATE" -mindepth 1 -print -quit)" ] || fail "nothing was written to the state directory $STATE"
echo "ok: the documented steps run the unit's ExecStart as $USER_NAME; it reads $ETC, writes $STATE and answers on http and https"
