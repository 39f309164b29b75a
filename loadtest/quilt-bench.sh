#!/usr/bin/env bash
# Cold patch reads vs a cold whole-blob read of the same quilt (issue 16's benchmark).
#
# A quilt of as many patches as fit at $SHARDS shards (ks - 1: 66 at n = 100): $PATCHES - 1
# patches of $PATCH_SIZE bytes and one of $SMALL_SIZE, about 50 MB encoded as a blob, is
# published once through the gateway's `PUT /v1/quilts` to a separate `walrus-sim` (4 nodes,
# in memory). Then, $ROUNDS times, each of these reads runs on a freshly started gateway (empty
# caches, no disk tier), timed by curl from request to last byte:
#   patch-small  GET /v1/blobs/by-quilt-patch-id/<id of the small patch>  (cold path: index
#                and patch columns as secondary slivers)
#   patch-large  the same for a $PATCH_SIZE patch
#   patch-recovered  the small patch again with the node holding its column offline (set
#                through walrus-sim's /sim/faults): that column is rebuilt from the other
#                nodes' recovery symbols
#   whole-blob   GET /v1/blobs/<quilt id>  (the whole quilt: a normal primary-sliver fill)
#   node-symbols one `GET …/recoverySymbols?targetSliver=<that column>&targetType=secondary`
#                sent straight to one node: what a rebuild waits for on the node side
# Every answer is compared with its source bytes, and each patch read is checked to be a cold
# read (gateway_quilt_patch_reads_total{source="cold"} = 1), with the slivers and
# recovery-symbol requests it sent recorded. The summary gives every round and the medians.
#
#   loadtest/quilt-bench.sh
#   ROUNDS=3 loadtest/quilt-bench.sh
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
OUT="${OUT:-$(mktemp -d /tmp/walrus-quilt-bench.XXXXXX)}"

LOG_TAG=quilt-bench
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

build_gateway_and_sim "$ROOT" "$PROFILE"
CURL="$(need curl curl)"

mkdir -p "$OUT/logs" "$OUT/patches" "$OUT/got"

# --- storage nodes -----------------------------------------------------------------------------
start_sim "$SHARDS" "$OUT/committee.json" "$OUT/logs"

PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
fresh_gateway() {
    if [ -n "${GW_PID:-}" ]; then stop_pid "$GW_PID"; fi
    start_gateway "$PORT" "$OUT/gw.out" "$OUT/logs/gw.log" --committee "$OUT/committee.json" \
        --memory-cache 1GiB
}

# --- the quilt -------------------------------------------------------------------------------
log "writing $((PATCHES - 1)) patches of $PATCH_SIZE bytes and one of $SMALL_SIZE"
form=()
for i in $(seq 0 $((PATCHES - 2))); do
    name="$(printf 'p%02d' "$i")"
    head -c "$PATCH_SIZE" /dev/urandom > "$OUT/patches/$name"
    form+=(-F "$name=@$OUT/patches/$name")
done
head -c "$SMALL_SIZE" /dev/urandom > "$OUT/patches/small"
form+=(-F "small=@$OUT/patches/small")

fresh_gateway
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
# The whole quilt's bytes, for checking whole-blob reads (this read warms nothing: the next
# read starts on a fresh gateway).
"$CURL" -sS --fail "$BASE/v1/blobs/$QUILT_ID" -o "$OUT/quilt.bin"
QUILT_BYTES="$(stat -c %s "$OUT/quilt.bin")"
log "quilt $QUILT_ID: $QUILT_BYTES bytes, $PATCHES patches"
# The node holding the small patch's first column (secondary sliver start -> pair n-1-start ->
# shard by the Blob ID's rotation, SPEC §7), and the URL of another node to send faults to.
read -r OWNER ADMIN_URL START < <(python3 - "$OUT/committee.json" "$QUILT_ID" "$SMALL_ID" <<'EOF2'
import base64, json, sys
c = json.load(open(sys.argv[1]))
b64 = lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
quilt, patch = b64(sys.argv[2]), b64(sys.argv[3])
n = c["n_shards"]
start = int.from_bytes(patch[33:35], "little")
shard = ((n - 1 - start) + int.from_bytes(quilt, "big") % n) % n
owner = next(i for i, node in enumerate(c["nodes"]) if shard in node["shards"])
other = c["nodes"][(owner + 1) % len(c["nodes"])]["url"].rstrip("/")
print(owner, other, start)
EOF2
)
set_offline() { # true|false
    "$CURL" -sS --fail -X POST "$ADMIN_URL/sim/faults?node=$OWNER" \
        -H 'content-type: application/json' -d "{\"offline\": $1}" -o /dev/null
}

# One cold read on a fresh gateway; sets T (seconds), XC (X-Cache) and SLIVERS. Not run in a
# subshell: the gateway it starts must stay tracked for the cleanup.
cold_read() { # kind path expected-file
    local kind="$1" path="$2" want="$3" t xc slivers
    fresh_gateway
    t="$("$CURL" -sS --fail -o "$OUT/got/$kind" -D "$OUT/got/$kind.headers" \
        -w '%{time_total}' "$BASE$path")"
    cmp -s "$OUT/got/$kind" "$want" || die "$kind: the answer differs from the source bytes"
    xc="$(grep -i '^x-cache:' "$OUT/got/$kind.headers" | tr -d '\r' | awk '{print $2}')"
    slivers=$(( $(gateway_metric 'gateway_sliver_requests_total{kind="primary"}') + $(gateway_metric 'gateway_sliver_requests_total{kind="secondary"}') ))
    slivers="$slivers+$(gateway_metric gateway_recovery_symbol_requests_total)rs"
    if [ "$kind" != whole-blob ]; then
        [ "$(gateway_metric 'gateway_quilt_patch_reads_total{source="cold"}')" = 1 ] \
            || die "$kind was not read on the cold path"
    fi
    T="$t" XC="$xc" SLIVERS="$slivers"
}

# --- rounds ----------------------------------------------------------------------------------
echo "uptime at start: $(uptime)" | tee "$OUT/summary.txt"
declare -A TIMES
for r in $(seq "$ROUNDS"); do
    for kind in patch-small patch-large patch-recovered whole-blob node-symbols; do
        case "$kind" in
            node-symbols)
                T="$("$CURL" -sS --fail -o "$OUT/got/symbols" -w '%{time_total}' \
                    "$ADMIN_URL/v1/blobs/$QUILT_ID/recoverySymbols?targetSliver=$START&targetType=secondary")"
                XC=- SLIVERS="$(stat -c %s "$OUT/got/symbols")B" ;;
            patch-small) cold_read "$kind" "/v1/blobs/by-quilt-patch-id/$SMALL_ID" "$OUT/patches/small" ;;
            patch-recovered)
                set_offline true
                cold_read "$kind" "/v1/blobs/by-quilt-patch-id/$SMALL_ID" "$OUT/patches/small"
                set_offline false ;;
            patch-large) cold_read "$kind" "/v1/blobs/by-quilt-patch-id/$LARGE_ID" "$OUT/patches/p00" ;;
            whole-blob) cold_read "$kind" "/v1/blobs/$QUILT_ID" "$OUT/quilt.bin" ;;
        esac
        TIMES[$kind]="${TIMES[$kind]:-} $T"
        printf 'round %d %-15s %8.1f ms  x-cache %-5s requests %s\n' "$r" "$kind" \
            "$(python3 -c "print($T * 1000)")" "$XC" "$SLIVERS" | tee -a "$OUT/summary.txt"
    done
done
echo "uptime at end: $(uptime)" | tee -a "$OUT/summary.txt"
{
    echo "quilt: $QUILT_BYTES bytes, $PATCHES patches ($((PATCHES - 1)) x $PATCH_SIZE B + $SMALL_SIZE B), $SHARDS shards, 4 nodes; $ROUNDS rounds"
    for kind in patch-small patch-large patch-recovered whole-blob node-symbols; do
        # shellcheck disable=SC2086
        printf 'median %-15s %8.1f ms\n' "$kind" "$(python3 -c "print($(median ${TIMES[$kind]}) * 1000)")"
    done
} | tee -a "$OUT/summary.txt"
log "results in $OUT"
