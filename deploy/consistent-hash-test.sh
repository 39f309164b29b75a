#!/usr/bin/env bash
# Consistent hashing across gateways, end to end on loopback: storage-sim, three walrus-gateway
# processes, and nginx with deploy/nginx-consistent-hash.conf in front. Checks that
#   1. every blob is filled exactly once across the three gateways (sum of fills = blobs), and a
#      second read of each through nginx is a cache hit on the gateway that filled it;
#   2. after one gateway is killed, reads still succeed and only that gateway's share of blobs
#      is filled again (by the others); every other blob stays a hit.
# Every downloaded byte is compared with the file it was seeded from. Exits non-zero on any
# failure. Needs nginx (installed from Debian if missing, when run as root) and curl.
#
#   deploy/consistent-hash-test.sh                 # builds (or reuses) the debug binaries
#   GATEWAY_BIN=... SIM_BIN=... deploy/consistent-hash-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BLOBS=${BLOBS:-60}

if ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null
    else
        echo "nginx is not installed" >&2; exit 1
    fi
fi
NGINX=$(command -v nginx)
if [ -z "${GATEWAY_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
    cargo build --locked -q -p walrus-gateway -p walrus-storage-sim --bins
    dir=${CARGO_TARGET_DIR:-target}/debug
    GATEWAY_BIN=${GATEWAY_BIN:-$dir/walrus-gateway}
    SIM_BIN=${SIM_BIN:-$dir/walrus-sim}
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$WORK/nginx/nginx.pid" ]; then kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Blobs, seeded into the simulated committee.
mkdir -p "$WORK/blobs"
seed_args=()
for i in $(seq 1 "$BLOBS"); do
    head -c $((4096 + i * 997)) /dev/urandom > "$WORK/blobs/$i"
    seed_args+=(--seed "$WORK/blobs/$i")
done
"$SIM_BIN" --committee-out "$WORK/committee.json" "${seed_args[@]}" > "$WORK/sim.out" 2>"$WORK/sim.err" &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q '^ready' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sim.out" || fail "storage-sim did not start: $(cat "$WORK/sim.err")"
# "seeded <blob_id> <file>"
awk '/^seeded/ {print $2, $3}' "$WORK/sim.out" > "$WORK/ids"
[ "$(wc -l < "$WORK/ids")" = "$BLOBS" ] || fail "seeded $(wc -l < "$WORK/ids") of $BLOBS blobs"

# Three gateways on the committee, each on a free port.
declare -a GW_PID GW_ADDR
for g in 1 2 3; do
    "$GATEWAY_BIN" serve --bind 127.0.0.1:0 --committee "$WORK/committee.json" \
        > "$WORK/gw$g.out" 2>"$WORK/gw$g.err" &
    GW_PID[$g]=$!
    PIDS+=($!)
    for _ in $(seq 1 300); do grep -q '^listening on http://' "$WORK/gw$g.out" 2>/dev/null && break; sleep 0.1; done
    GW_ADDR[$g]=$(sed -n 's|^listening on http://||p' "$WORK/gw$g.out" | head -1)
    [ -n "${GW_ADDR[$g]}" ] || fail "gateway $g did not start: $(cat "$WORK/gw$g.err")"
done

# nginx in front, on a free port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@LISTEN@|127.0.0.1:$PORT|" \
    -e "s|@GATEWAY_1@|${GW_ADDR[1]}|" -e "s|@GATEWAY_2@|${GW_ADDR[2]}|" -e "s|@GATEWAY_3@|${GW_ADDR[3]}|" \
    deploy/nginx-consistent-hash.conf > "$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon on;' 2>"$WORK/nginx.err" \
    || fail "nginx did not start: $(cat "$WORK/nginx.err")"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/status" && break; sleep 0.1; done

fills() { curl -s "http://$1/metrics" | awk '$1 == "gateway_fills_started_total" {print $2+0}'; }

# GET every blob through nginx; check its bytes; count X-Cache values.
read_all() {
    local hits=0 misses=0
    while read -r id file; do
        local cache
        cache=$(curl -s -f -D - -o "$WORK/got" "http://127.0.0.1:$PORT/v1/blobs/$id" \
            | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" {print $2}') \
            || fail "GET $id through nginx failed"
        cmp -s "$WORK/got" "$file" || fail "wrong bytes for $id"
        case "$cache" in hit-*) hits=$((hits + 1)) ;; *) misses=$((misses + 1)) ;; esac
    done < "$WORK/ids"
    echo "$hits $misses"
}

read -r hits misses < <(read_all)
f1=$(fills "${GW_ADDR[1]}"); f2=$(fills "${GW_ADDR[2]}"); f3=$(fills "${GW_ADDR[3]}")
echo "first pass: $misses misses, $hits hits; fills per gateway: $f1 $f2 $f3"
[ $((f1 + f2 + f3)) = "$BLOBS" ] || fail "fills $f1+$f2+$f3 != $BLOBS blobs: some blob was filled twice"
[ "$misses" = "$BLOBS" ] || fail "expected $BLOBS misses on the first pass"
read -r hits misses < <(read_all)
echo "second pass: $misses misses, $hits hits"
[ "$hits" = "$BLOBS" ] || fail "second pass had $misses misses"
[ "$(( $(fills "${GW_ADDR[1]}") + $(fills "${GW_ADDR[2]}") + $(fills "${GW_ADDR[3]}") ))" = "$BLOBS" ] \
    || fail "the second pass filled again"
for f in "$f1" "$f2" "$f3"; do [ "$f" -gt 0 ] || fail "a gateway got no blobs ($f1 $f2 $f3)"; done

# Lose gateway 2: only its share moves.
kill "${GW_PID[2]}"; wait "${GW_PID[2]}" 2>/dev/null || true
read -r hits misses < <(read_all)
g1=$(fills "${GW_ADDR[1]}"); g3=$(fills "${GW_ADDR[3]}")
moved=$(( (g1 - f1) + (g3 - f3) ))
echo "after killing gateway 2 (which held $f2): $misses misses, $hits hits; refills on the others: $moved"
[ "$misses" = "$f2" ] || fail "$misses misses, expected exactly gateway 2's $f2 blobs"
[ "$moved" = "$f2" ] || fail "$moved refills, expected $f2"
echo "ok: $BLOBS blobs, each filled once across 3 gateways; losing one moved only its $f2 blobs"
