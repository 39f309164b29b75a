#!/usr/bin/env bash
# The disk tier's two benchmarks that cache-compare.sh cannot make (issue 18):
#
# 1. Cold page cache: a disk hit on a 1 GiB blob whose cache file is not in the page cache,
#    against `dd` of the same file to /dev/null, evicted the same way, same run. Only the cache
#    file is evicted (`dd iflag=nocache count=0`, i.e. posix_fadvise(DONTNEED) on that file);
#    the machine's page cache is never dropped. Rounds alternate which goes first. Each cold
#    gateway read is followed by a warm one of the same file (its pages now cached): the rate
#    one connection gets from this gateway at all, which bounds what a cold read can reach.
# 2. Scrub cost: 1 MiB disk hits over HTTP/1.1 (wrk) while the scrub runs at its default rate,
#    against the same gateway and cache directory with `--scrub-rate 0`, rounds interleaved.
#    Each "on" window starts with a fresh gateway (its scrub starts a pass over the 1 GiB file,
#    ~16 s at 64 MiB/s). The bytes reported per window are those of files the scrub finished in
#    it (the counter moves per file), so a window inside the big file's pass reports 0.
#
#   loadtest/disk-bench.sh
#   GATEWAY_BIN=target/release/walrus-gateway LOADTEST_BIN=target/release/walrus-loadtest \
#       ROUNDS=3 loadtest/disk-bench.sh
#
# Knobs (environment): PARTS ("cold scrub": which benchmarks to run), ROUNDS (3), BIG (1GiB), SHARDS (300: the smallest round size here whose
# largest blob holds 1 GiB), DURATION (8 s of wrk per window), CONNECTIONS (64), OUT,
# SERVER_CPU / CLIENT_CPU, GATEWAY_BIN / LOADTEST_BIN (skip the build).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
PARTS="${PARTS:-cold scrub}"
BIG="${BIG:-1GiB}"
SHARDS="${SHARDS:-300}"
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-64}"
PROFILE="${PROFILE:-release}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-disk-bench.XXXXXX)}"

LOG_TAG=disk-bench
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

WRK="$(need wrk wrk)"
CURL="$(need curl curl)"
SIM_BIN="${SIM_BIN:-unused}"
build_binaries "$ROOT" "$PROFILE"

mkdir -p "$OUT/data" "$OUT/logs"
big_bytes="$(bytes_of "$BIG")"
log "writing a $BIG and a 1 MiB random blob"
head -c "$big_bytes" /dev/urandom > "$OUT/data/big.bin"
head -c $((1 << 20)) /dev/urandom > "$OUT/data/small.bin"
CACHE="$OUT/cache"
TOKEN="bench-$RANDOM$RANDOM"
PORT="$(free_port)"

start() { # extra serve args...
    start_gateway "$PORT" "$OUT/gw.out" "$OUT/logs/gw.log" --sim-shards "$SHARDS" \
        --seed "$OUT/data/big.bin" --seed "$OUT/data/small.bin" --cache-dir "$CACHE" \
        --memory-cache 1MiB --memory-max-object 4KiB --admin-token "$TOKEN" "$@"
    mapfile -t ids < <(grep -E '^[A-Za-z0-9_-]{43}$' "$OUT/gw.out")
    BIG_ID="${ids[0]}"
    SMALL_ID="${ids[1]}"
}
stop() { stop_pid "$GW_PID"; }
url() { echo "http://127.0.0.1:$PORT/v1/blobs/$1"; }
x_cache() { "$CURL" -s -o /dev/null -D - "$(url "$1")" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}'; }
scrubbed() { # bytes scrubbed so far, from /admin/cache (0 if the gateway did not answer)
    "$CURL" -s --max-time 10 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/admin/cache" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["disk"]["scrub"]["bytes_scrubbed"])' 2>/dev/null ||
        echo 0
}

log "filling both blobs into the disk tier ($SHARDS shards)"
start --scrub-rate 0
for id in "$BIG_ID" "$SMALL_ID"; do
    "$CURL" -s -o /dev/null "$(url "$id")"
    for _ in $(seq 600); do [ "$(x_cache "$id")" = hit-disk ] && break; sleep 0.5; done
    [ "$(x_cache "$id")" = hit-disk ] || die "blob $id never became a disk hit"
done
"$CURL" -s "$(url "$BIG_ID")" | cmp - "$OUT/data/big.bin" || die "the gateway's bytes differ from the source"
FILE="$(find "$CACHE" -type f -size +$((big_bytes / 1024))k | head -1)"
[ -n "$FILE" ] || die "no cache file of the big blob under $CACHE"
log "cache file: $FILE"

evict() { dd if="$FILE" iflag=nocache count=0 status=none; }
# Fraction of the cache file's pages in the page cache (util-linux fincore), to show the
# eviction worked.
resident() {
    fincore --bytes --noheadings --output RES,SIZE "$FILE" | awk '{printf "%.3f", $1 / $2}'
}
gateway_cold() { # MB/s of one cold GET of the big blob
    evict
    local r; r="$(resident)"
    "$CURL" -s -o /dev/null -w '%{size_download} %{time_total}\n' "$(url "$BIG_ID")" |
        awk -v r="$r" '{printf "%.0f %s\n", $1 / $2 / 1e6, r}'
}
gateway_warm() { # MB/s of one GET of the big blob right after a cold one (its pages now cached):
    # the one-connection serving rate a cold read cannot beat
    "$CURL" -s -o /dev/null -w '%{size_download} %{time_total}\n' "$(url "$BIG_ID")" |
        awk '{printf "%.0f\n", $1 / $2 / 1e6}'
}
dd_cold() {
    evict
    local r; r="$(resident)"
    local start end
    start=$(date +%s.%N)
    dd if="$FILE" of=/dev/null bs=1M status=none
    end=$(date +%s.%N)
    python3 -c "import os,sys; print(f'{os.path.getsize(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])) / 1e6:.0f} $r')" "$FILE" "$start" "$end"
}
gw_rates=(); dd_rates=(); warm_rates=()
cold_rounds=0
case " $PARTS " in *" cold "*) cold_rounds="$ROUNDS" ;; esac
for r in $(seq "$cold_rounds"); do
    if [ $((r % 2)) -eq 1 ]; then g="$(gateway_cold)"; w="$(gateway_warm)"; d="$(dd_cold)"; else d="$(dd_cold)"; g="$(gateway_cold)"; w="$(gateway_warm)"; fi
    log "round $r cold: gateway ${g% *} MB/s (resident before ${g#* }), dd ${d% *} MB/s (resident before ${d#* }); gateway warm $w MB/s"
    gw_rates+=("${g% *}"); dd_rates+=("${d% *}"); warm_rates+=("$w")
done
[ "$(x_cache "$BIG_ID")" = hit-disk ] || die "the big blob was not served from the disk tier"
stop

wrk_rps() { # requests/s of 1 MiB disk hits
    "${PIN_CLIENT[@]}" "$WRK" -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 60s "$(url "$SMALL_ID")" |
        awk '/Requests\/sec/{print $2}'
}
on_rps=(); off_rps=(); on_bytes=()
scrub_rounds=0
case " $PARTS " in *" scrub "*) scrub_rounds="$ROUNDS" ;; esac
for r in $(seq "$scrub_rounds"); do
    for side in on off; do
        if [ "$side" = on ]; then start; else start --scrub-rate 0; fi
        [ "$(x_cache "$SMALL_ID")" = hit-disk ] || die "the 1 MiB blob is not a disk hit"
        before="$(scrubbed)"
        rps="$(wrk_rps)"
        after="$(scrubbed)"
        stop
        log "round $r scrub $side: $rps req/s, scrubbed $(( (after - before) >> 20 )) MiB during the window"
        if [ "$side" = on ]; then on_rps+=("$rps"); on_bytes+=("$(( (after - before) >> 20 ))"); else off_rps+=("$rps"); fi
    done
done

gw="$(median "${gw_rates[@]}")"; dd_m="$(median "${dd_rates[@]}")"; warm="$(median "${warm_rates[@]}")"
on="$(median "${on_rps[@]}")"; off="$(median "${off_rps[@]}")"
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else 'n/a')"; }
{
    echo "disk-bench: $ROUNDS rounds, $BIG blob at $SHARDS shards, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| cold page cache, $BIG | gateway disk hit MB/s | dd MB/s | ratio | gateway, same file warm, MB/s |"
    echo "|---|---|---|---|---|"
    echo "| median | $gw | $dd_m | $(ratio "$gw" "$dd_m") | $warm |"
    echo "| rounds | ${gw_rates[*]} | ${dd_rates[*]} | | ${warm_rates[*]} |"
    echo
    echo "| 1 MiB disk hits, HTTP/1.1, $CONNECTIONS conns | scrub on (64 MiB/s) | scrub off | on/off |"
    echo "|---|---|---|---|"
    echo "| median req/s | $on | $off | $(ratio "$on" "$off") |"
    echo "| rounds | ${on_rps[*]} | ${off_rps[*]} | |"
    echo "| MiB scrubbed per window | ${on_bytes[*]} | 0 | |"
} | tee "$OUT/summary.md"
