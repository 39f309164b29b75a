#!/usr/bin/env bash
# Consistent hashing across gateways, end to end on loopback: storage-sim, three walrus-gateway
# processes, and nginx with deploy/nginx-consistent-hash.conf in front. Checks that
#   1. every blob is filled exactly once across the three gateways (sum of fills = blobs), and a
#      second read of each through nginx is a cache hit on the gateway that filled it;
#   2. the Blob-ID-keyed routes other than reads reach the gateway that holds the blob: an
#      inference and a model warm-up on a model read before cause no second fill; prefetches
#      (`POST /admin/prefetch?blob_id=ID`) fill each blob once and later reads of it are hits;
#      a purge (`DELETE /admin/cache/{id}`) makes the next read a miss;
#   3. after one gateway is killed, reads still succeed and only that gateway's share of blobs
#      is filled again (by the others); every other blob stays a hit.
# Every downloaded byte is compared with the file it was seeded from. Exits non-zero on any
# failure. Needs nginx (installed from Debian if missing, when run as root) and curl.
#
#   deploy/consistent-hash-test.sh                 # builds (or reuses) the debug binaries
#   GATEWAY_BIN=... SIM_BIN=... deploy/consistent-hash-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BLOBS=${BLOBS:-60}
PREFETCH=${PREFETCH:-12}
TOKEN=consistent-hash-test
# Models with reference inputs (their .json): each read, run and warmed through nginx. With
# four, a config that routed inference by the URI would pass by chance once in 3^8.
MODELS=(inference/tests/models/mlp.onnx inference/tests/models/cnn.onnx
    inference/tests/models/batch_mlp.onnx inference/tests/models/multi_io.onnx)

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

# Blobs to read, blobs to prefetch, and a model, seeded into the simulated committee.
mkdir -p "$WORK/blobs" "$WORK/prefetch"
seed_args=()
for m in "${MODELS[@]}"; do seed_args+=(--seed "$m"); done
for i in $(seq 1 "$BLOBS"); do
    head -c $((4096 + i * 997)) /dev/urandom > "$WORK/blobs/$i"
    seed_args+=(--seed "$WORK/blobs/$i")
done
for i in $(seq 1 "$PREFETCH"); do
    head -c $((8192 + i * 991)) /dev/urandom > "$WORK/prefetch/$i"
    seed_args+=(--seed "$WORK/prefetch/$i")
done
"$SIM_BIN" --committee-out "$WORK/committee.json" "${seed_args[@]}" > "$WORK/sim.out" 2>"$WORK/sim.err" &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q '^ready' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sim.out" || fail "storage-sim did not start: $(cat "$WORK/sim.err")"
# "seeded <blob_id> <file>"
awk -v d="$WORK/blobs/" '/^seeded/ && index($3, d) == 1 {print $2, $3}' "$WORK/sim.out" > "$WORK/ids"
awk -v d="$WORK/prefetch/" '/^seeded/ && index($3, d) == 1 {print $2, $3}' "$WORK/sim.out" > "$WORK/prefetch.ids"
for m in "${MODELS[@]}"; do
    awk -v m="$m" '/^seeded/ && $3 == m {print $2, $3}' "$WORK/sim.out"
done > "$WORK/models.ids"
[ "$(wc -l < "$WORK/ids")" = "$BLOBS" ] || fail "seeded $(wc -l < "$WORK/ids") of $BLOBS blobs"
[ "$(wc -l < "$WORK/prefetch.ids")" = "$PREFETCH" ] || fail "seeded $(wc -l < "$WORK/prefetch.ids") of $PREFETCH blobs to prefetch"
[ "$(wc -l < "$WORK/models.ids")" = "${#MODELS[@]}" ] || fail "the models were not all seeded"

# Three gateways on the committee, each on a free port.
declare -a GW_PID GW_ADDR
for g in 1 2 3; do
    "$GATEWAY_BIN" serve --bind 127.0.0.1:0 --committee "$WORK/committee.json" --admin-token "$TOKEN" \
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
total_fills() { echo $(( $(fills "${GW_ADDR[1]}") + $(fills "${GW_ADDR[2]}") + $(fills "${GW_ADDR[3]}") )); }
x_cache() { tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" {print $2}'; }

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
[ "$(total_fills)" = "$BLOBS" ] || fail "the second pass filled again"
for f in "$f1" "$f2" "$f3"; do [ "$f" -gt 0 ] || fail "a gateway got no blobs ($f1 $f2 $f3)"; done

# Inference and warm-up go where the model is: read each model once through nginx (one fill),
# then neither an inference nor a warm-up through nginx fills it again anywhere.
while read -r id file; do
    curl -s -f -o "$WORK/model" "http://127.0.0.1:$PORT/v1/blobs/$id" || fail "GET model $id through nginx"
    cmp -s "$WORK/model" "$file" || fail "wrong bytes for model $id"
done < "$WORK/models.ids"
before=$(total_fills)
while read -r id file; do
    python3 -c 'import json,sys; print(json.dumps({"inputs": json.load(open(sys.argv[1]))["cases"][0]["inputs"]}))' \
        "${file%.onnx}.json" > "$WORK/inputs.json"
    status=$(curl -s -o "$WORK/answer" -w '%{http_code}' -H 'content-type: application/json' \
        --data-binary @"$WORK/inputs.json" "http://127.0.0.1:$PORT/v1/inference/$id")
    [ "$status" = 200 ] || fail "inference on $file through nginx answered $status: $(head -c 300 "$WORK/answer")"
    grep -q '"outputs"' "$WORK/answer" || fail "inference answer has no outputs: $(head -c 300 "$WORK/answer")"
    status=$(curl -s -o "$WORK/answer" -w '%{http_code}' -X POST -H "authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$PORT/v1/models/$id/warm")
    case "$status" in 200|202|204) ;; *) fail "warm-up of $file through nginx answered $status: $(head -c 300 "$WORK/answer")" ;; esac
done < "$WORK/models.ids"
after=$(total_fills)
echo "inference and warm-up of ${#MODELS[@]} models through nginx: fills $before -> $after"
[ "$after" = "$before" ] || fail "an inference or warm-up filled a model again on another gateway"

# Prefetch across the region: one request per Blob ID, the ID in the query for nginx's hash.
before=$(total_fills)
while read -r id file; do
    status=$(curl -s -o "$WORK/answer" -w '%{http_code}' -H "authorization: Bearer $TOKEN" \
        --data-binary "{\"blob_ids\": [\"$id\"]}" "http://127.0.0.1:$PORT/admin/prefetch?blob_id=$id")
    [ "$status" = 202 ] || fail "prefetch of $id answered $status: $(head -c 300 "$WORK/answer")"
done < "$WORK/prefetch.ids"
for _ in $(seq 1 100); do [ "$(total_fills)" -ge $((before + PREFETCH)) ] && break; sleep 0.1; done
hits=0
while read -r id file; do
    cache=$(curl -s -f -D - -o "$WORK/got" "http://127.0.0.1:$PORT/v1/blobs/$id" | x_cache) \
        || fail "GET prefetched $id through nginx failed"
    cmp -s "$WORK/got" "$file" || fail "wrong bytes for prefetched $id"
    case "$cache" in hit-*) hits=$((hits + 1)) ;; esac
done < "$WORK/prefetch.ids"
after=$(total_fills)
echo "prefetch through nginx: $PREFETCH blobs, fills $before -> $after, then $hits of $PREFETCH reads hit"
[ "$after" = $((before + PREFETCH)) ] || fail "prefetching $PREFETCH blobs made $((after - before)) fills"
[ "$hits" = "$PREFETCH" ] || fail "only $hits of $PREFETCH prefetched blobs were hits: prefetches reached other gateways"

# Purge through nginx reaches the holder: the next read is a miss there, filled once.
read -r id file < "$WORK/prefetch.ids"
status=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/admin/cache/$id")
case "$status" in 200|204) ;; *) fail "purge of $id answered $status" ;; esac
before=$(total_fills)
cache=$(curl -s -f -D - -o "$WORK/got" "http://127.0.0.1:$PORT/v1/blobs/$id" | x_cache)
cmp -s "$WORK/got" "$file" || fail "wrong bytes for $id after the purge"
case "$cache" in hit-*) fail "read after a purge through nginx was a hit ($cache)" ;; esac
[ "$(total_fills)" = $((before + 1)) ] || fail "read after the purge did not fill exactly once"
echo "purge through nginx: the next read was a miss ($cache), filled once"

# Lose gateway 2: only its share moves.
f1=$(fills "${GW_ADDR[1]}"); f3=$(fills "${GW_ADDR[3]}")
kill "${GW_PID[2]}"; wait "${GW_PID[2]}" 2>/dev/null || true
read -r hits misses < <(read_all)
g1=$(fills "${GW_ADDR[1]}"); g3=$(fills "${GW_ADDR[3]}")
moved=$(( (g1 - f1) + (g3 - f3) ))
echo "after killing gateway 2 (which held $f2): $misses misses, $hits hits; refills on the others: $moved"
[ "$misses" = "$f2" ] || fail "$misses misses, expected exactly gateway 2's $f2 blobs"
[ "$moved" = "$f2" ] || fail "$moved refills, expected $f2"
echo "ok: $BLOBS blobs, each filled once across 3 gateways; inference, warm-up, $PREFETCH prefetches and a purge reached the holder; losing one moved only its $f2 blobs"
