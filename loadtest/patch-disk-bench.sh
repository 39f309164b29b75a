#!/usr/bin/env bash
# Patch reads from the disk tier vs cold patch reads (issue 16: patches on the disk tier).
#
# The quilt of `quilt-bench.sh` ($PATCHES patches at $SHARDS shards: $PATCHES - 1 of
# $PATCH_SIZE bytes and one of $SMALL_SIZE, about 50 MB as a blob) is published once through the
# gateway's `PUT /v1/quilts` to a separate `walrus-sim` (4 nodes, in memory). Then, $ROUNDS
# times, with curl timing each read from request to last byte:
#   cold-small / cold-large  a gateway with a fresh, empty --cache-dir reads the small and a
#                            large patch by patch ID (index and patch columns as secondary
#                            slivers); both are written to the disk tier
#   disk-small / disk-large  the gateway restarted on that directory (memory empty) reads them
#                            again: disk hits (X-Cache: hit-disk), no node request
#   memory-small             the small patch once more: promoted to memory (hit-memory)
# Every answer is compared with its source bytes; each read's X-Cache and the slivers the
# gateway asked for are recorded (a disk or memory hit must have asked for none).
#
#   loadtest/patch-disk-bench.sh
#   ROUNDS=3 loadtest/patch-disk-bench.sh
#
# Knobs (environment): ROUNDS, SHARDS, PATCHES, PATCH_SIZE, SMALL_SIZE, PROFILE,
# GATEWAY_BIN / SIM_BIN (skip the build), OUT, SERVER_CPU / CLIENT_CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-5}"
SHARDS="${SHARDS:-100}"
PATCHES="${PATCHES:-66}"
PATCH_SIZE="${PATCH_SIZE:-740000}"
SMALL_SIZE="${SMALL_SIZE:-2048}"
PROFILE="${PROFILE:-release}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-patch-disk-bench.XXXXXX)}"

LOG_TAG=patch-disk-bench
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

build_gateway_and_sim "$ROOT" "$PROFILE"
CURL="$(need curl curl)"

mkdir -p "$OUT/logs" "$OUT/patches" "$OUT/got"

start_sim "$SHARDS" "$OUT/committee.json" "$OUT/logs"

PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
gateway_on() { # cache dir
    if [ -n "${GW_PID:-}" ]; then stop_pid "$GW_PID"; fi
    start_gateway "$PORT" "$OUT/gw.out" "$OUT/logs/gw.log" --committee "$OUT/committee.json" \
        --memory-cache 1GiB --cache-dir "$1" --scrub-rate 0
}

log "writing $((PATCHES - 1)) patches of $PATCH_SIZE bytes and one of $SMALL_SIZE"
form=()
for i in $(seq 0 $((PATCHES - 2))); do
    name="$(printf 'p%02d' "$i")"
    head -c "$PATCH_SIZE" /dev/urandom > "$OUT/patches/$name"
    form+=(-F "$name=@$OUT/patches/$name")
done
head -c "$SMALL_SIZE" /dev/urandom > "$OUT/patches/small"
form+=(-F "small=@$OUT/patches/small")

# Published through a gateway whose cache directory is then thrown away.
gateway_on "$OUT/publish-cache"
log "publishing the quilt through PUT /v1/quilts"
"$CURL" -sS --fail-with-body -X PUT "$BASE/v1/quilts" "${form[@]}" -o "$OUT/put.json" \
    || die "publishing failed: $(head -c 500 "$OUT/put.json")"
read -r QUILT_ID SMALL_ID LARGE_ID < <(python3 - "$OUT/put.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))
r = a["blobStoreResult"]
blob = (r.get("newlyCreated") or {}).get("blobObject", {}).get("blobId") or r["alreadyCertified"]["blobId"]
ids = {p["identifier"]: p["quiltPatchId"] for p in a["storedQuiltBlobs"]}
print(blob, ids["small"], ids["p00"])
EOF
)
log "quilt $QUILT_ID"

# One timed read; sets T (seconds), XC (X-Cache) and SLIVERS (asked by this gateway so far).
timed_read() { # kind path expected-file
    local kind="$1" path="$2" want="$3"
    T="$("$CURL" -sS --fail -o "$OUT/got/$kind" -D "$OUT/got/$kind.headers" \
        -w '%{time_total}' "$BASE$path")"
    cmp -s "$OUT/got/$kind" "$want" || die "$kind: the answer differs from the source bytes"
    XC="$(grep -i '^x-cache:' "$OUT/got/$kind.headers" | tr -d '\r' | awk '{print $2}')"
    SLIVERS=$(( $(gateway_metric 'gateway_sliver_requests_total{kind="primary"}') + $(gateway_metric 'gateway_sliver_requests_total{kind="secondary"}') ))
}

echo "uptime at start: $(uptime)" | tee "$OUT/summary.txt"
declare -A TIMES
record() { # round kind expected-x-cache
    [ "$XC" = "$3" ] || die "$2: X-Cache $XC, expected $3"
    TIMES[$2]="${TIMES[$2]:-} $T"
    printf 'round %d %-13s %8.2f ms  x-cache %-10s slivers asked so far %s\n' "$1" "$2" \
        "$(python3 -c "print($T * 1000)")" "$XC" "$SLIVERS" | tee -a "$OUT/summary.txt"
}
for r in $(seq "$ROUNDS"); do
    cache="$OUT/cache-$r"
    gateway_on "$cache"
    timed_read cold-small "/v1/blobs/by-quilt-patch-id/$SMALL_ID" "$OUT/patches/small"
    record "$r" cold-small miss
    timed_read cold-large "/v1/blobs/by-quilt-patch-id/$LARGE_ID" "$OUT/patches/p00"
    record "$r" cold-large miss
    for _ in $(seq 200); do
        [ "$(gateway_metric 'gateway_disk_cache_kind_entries{kind="patch"}')" = 2 ] && break
        sleep 0.05
    done
    [ "$(gateway_metric 'gateway_disk_cache_kind_entries{kind="patch"}')" = 2 ] || die "the patches never reached the disk tier"
    gateway_on "$cache"
    timed_read disk-small "/v1/blobs/by-quilt-patch-id/$SMALL_ID" "$OUT/patches/small"
    record "$r" disk-small hit-disk
    timed_read disk-large "/v1/blobs/by-quilt-patch-id/$LARGE_ID" "$OUT/patches/p00"
    record "$r" disk-large hit-disk
    timed_read memory-small "/v1/blobs/by-quilt-patch-id/$SMALL_ID" "$OUT/patches/small"
    record "$r" memory-small hit-memory
    [ "$SLIVERS" = 0 ] || die "a disk or memory hit asked for slivers ($SLIVERS)"
    echo "round $r patch files: $(find "$cache/patches" -type f -printf '%s ' )bytes" | tee -a "$OUT/summary.txt"
done
echo "uptime at end: $(uptime)" | tee -a "$OUT/summary.txt"
{
    echo "quilt: $PATCHES patches ($((PATCHES - 1)) x $PATCH_SIZE B + $SMALL_SIZE B), $SHARDS shards, 4 nodes; $ROUNDS rounds"
    for kind in cold-small cold-large disk-small disk-large memory-small; do
        # shellcheck disable=SC2086
        printf 'median %-13s %8.2f ms\n' "$kind" "$(python3 -c "print($(median ${TIMES[$kind]}) * 1000)")"
    done
} | tee -a "$OUT/summary.txt"
log "results in $OUT"
