#!/usr/bin/env bash
# A/B comparison of two walrus-gateway builds on memory hits: the same seeded blobs, the same
# load generator, rounds interleaved (A, B, A, B, ...) so that the machine's load drifts over
# both alike. Answers "did this change make hits slower?" with medians and B/A ratios.
#
#   GATEWAY_A=/path/old/walrus-gateway GATEWAY_B=/path/new/walrus-gateway \
#   LOADTEST_BIN=/path/walrus-loadtest loadtest/ab-compare.sh
#
# Knobs (environment): SIZES ("4KiB 1MiB 64MiB"), PROTOS ("1 2"), ROUNDS (5), DURATION (5s),
# WARMUP (1s), CONCURRENCY (64), BLOBS_PER_SIZE (4), SHARDS (100), OUT (a temp dir),
# SERVER_CPU / CLIENT_CPU (0 / 1), A_ARGS / B_ARGS (extra `serve` arguments for one side).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZES="${SIZES:-4KiB 1MiB 64MiB}"
PROTOS="${PROTOS:-1 2}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CONCURRENCY="${CONCURRENCY:-64}"
BLOBS_PER_SIZE="${BLOBS_PER_SIZE:-4}"
SHARDS="${SHARDS:-100}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-ab.XXXXXX)}"

LOG_TAG=ab-compare
. "$ROOT/loadtest/bench-lib.sh"

[ -x "${GATEWAY_A:-}" ] || die "set GATEWAY_A to the baseline walrus-gateway binary"
[ -x "${GATEWAY_B:-}" ] || die "set GATEWAY_B to the walrus-gateway binary under test"
[ -x "${LOADTEST_BIN:-}" ] || die "set LOADTEST_BIN to a walrus-loadtest binary"

mkdir -p "$OUT"
make_seed_blobs "$OUT/data" "$SIZES" "$BLOBS_PER_SIZE"

declare -A PORT
for side in A B; do
    bin_var="GATEWAY_$side"
    args_var="${side}_ARGS"
    GATEWAY_BIN="${!bin_var}"
    PORT[$side]="$(free_port)"
    log "starting $side ($GATEWAY_BIN) on 127.0.0.1:${PORT[$side]}"
    # shellcheck disable=SC2086
    start_gateway "${PORT[$side]}" "$OUT/$side.out" "$OUT/$side.log" --sim-shards "$SHARDS" \
        "${seeds[@]}" ${!args_var:-}
done
# Both sides seeded the same bytes on the same committee size, so they print the same IDs.
mapfile -t IDS < <(grep -v '^listening on' "$OUT/A.out" | head -n $(( ${#seeds[@]} / 2 )))
mapfile -t IDS_B < <(grep -v '^listening on' "$OUT/B.out" | head -n $(( ${#seeds[@]} / 2 )))
[ "${IDS[*]}" = "${IDS_B[*]}" ] || die "A and B printed different Blob IDs for the same seeds"
k=0
for size in $SIZES; do
    : > "$OUT/blobs-$size.txt"
    for _ in $(seq "$BLOBS_PER_SIZE"); do
        echo "${IDS[$k]} $(bytes_of "$size")" >> "$OUT/blobs-$size.txt"
        k=$((k + 1))
    done
done

field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
summary="$OUT/summary.md"
{
    echo "| size | HTTP | A req/s (median) | B req/s (median) | B ÷ A | A p99 ms | B p99 ms | errors A/B |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$summary"
for size in $SIZES; do
    for proto in $PROTOS; do
        declare -A RPS=([A]="" [B]="") P99=([A]="" [B]="") ERR=([A]=0 [B]=0)
        for round in $(seq "$ROUNDS"); do
            for side in A B; do
                json="$OUT/$size-http$proto-$side-$round.json"
                "${PIN_CLIENT[@]}" "$LOADTEST_BIN" --target "http://127.0.0.1:${PORT[$side]}" \
                    --blobs "$OUT/blobs-$size.txt" --n-shards "$SHARDS" --preset hit \
                    --concurrency "$CONCURRENCY" --http "$proto" --connections 4 \
                    --duration "$DURATION" --warmup "$WARMUP" --verify-sample 0.1% \
                    --no-progress --json "$json" > "$OUT/$size-http$proto-$side-$round.txt"
                RPS[$side]+=" $(field "$json" 'r["throughput_rps"]')"
                P99[$side]+=" $(field "$json" 'r["latency_us"]["p99"]/1e3')"
                ERR[$side]=$(( ${ERR[$side]} + $(field "$json" 'r["errors"]') ))
            done
        done
        # shellcheck disable=SC2086
        {
            ra="$(median ${RPS[A]})"; rb="$(median ${RPS[B]})"
            pa="$(median ${P99[A]})"; pb="$(median ${P99[B]})"
        }
        ratio="$(python3 -c "print(round($rb / $ra, 3) if $ra else 'n/a')")"
        log "$size HTTP/$proto: A$(printf ' %.0f' ${RPS[A]}) | B$(printf ' %.0f' ${RPS[B]}) -> B/A $ratio"
        printf '| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %s / %s |\n' "$size" "$proto" "$ra" "$rb" \
            "$ratio" "$pa" "$pb" "${ERR[A]}" "${ERR[B]}" >> "$summary"
    done
done
{
    echo
    echo "A = $GATEWAY_A, B = $GATEWAY_B; both on CPU $SERVER_CPU with the embedded storage-sim ($SHARDS shards),"
    echo "walrus-loadtest on CPU $CLIENT_CPU: --preset hit, $BLOBS_PER_SIZE blobs per size, concurrency $CONCURRENCY over 4"
    echo "connections, $ROUNDS interleaved rounds of $DURATION after $WARMUP warm-up; medians over rounds."
    echo "Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg). $(nproc) CPUs."
} >> "$summary"
cat "$summary"
log "reports in $OUT"
