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
#    against the same gateway and cache directory with `--scrub-rate 0`, rounds interleaved,
#    plus an "idle" window (scrub on, no requests) that shows the rate the scrub gets alone.
#    Each window starts with a fresh gateway (its scrub starts a pass over the 1 GiB file,
#    ~16 s at 64 MiB/s). Before the windows, one pass at full speed checks every file once
#    (PRIME=1), so the windows see the steady state: a build that keeps each row's suffix cover
#    after the first full check uses it there; PRIME=0 measures first passes (full checks).
#    The MiB reported per window are those the scrub checked in it (`pass_bytes_done`, row by
#    row; a build without that field reports the bytes of files finished in the window).
#
#   loadtest/disk-bench.sh
#   GATEWAY_BIN=target/release/walrus-gateway LOADTEST_BIN=target/release/walrus-loadtest \
#       ROUNDS=3 loadtest/disk-bench.sh
#
# Knobs (environment): PARTS ("cold scrub": which benchmarks to run), ROUNDS (3), BIG (1GiB), SHARDS (300: the smallest round size here whose
# largest blob holds 1 GiB), DURATION (8 s of wrk per window), CONNECTIONS (64), PRIME (1), OUT,
# SERVER_CPU / CLIENT_CPU, GATEWAY_BIN / LOADTEST_BIN (skip the build).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
PARTS="${PARTS:-cold scrub}"
BIG="${BIG:-1GiB}"
SHARDS="${SHARDS:-300}"
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-64}"
PRIME="${PRIME:-1}"
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
scrub_progress() { # "<bytes checked this pass> <achieved B/s> <passes>" from /admin/cache (0s if no answer)
    "$CURL" -s --max-time 10 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/admin/cache" |
        python3 -c 'import json,sys; s=json.load(sys.stdin)["disk"]["scrub"]; print(s.get("pass_bytes_done", s["bytes_scrubbed"]), s.get("achieved_rate", 0), s["passes"])' 2>/dev/null ||
        echo "0 0 0"
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
on_rps=(); off_rps=(); on_mib=(); idle_mib=()
scrub_rounds=0
case " $PARTS " in *" scrub "*) scrub_rounds="$ROUNDS" ;; esac
if [ "$scrub_rounds" -gt 0 ] && [ "$PRIME" = 1 ]; then
    log "priming: one scrub pass over every file at full speed"
    start --scrub-rate 64GiB
    primed=0
    for _ in $(seq 1200); do
        read -r _ _ passes < <(scrub_progress)
        if [ "$passes" -ge 1 ]; then primed=1; break; fi
        sleep 0.5
    done
    stop
    [ "$primed" = 1 ] || die "the priming scrub pass never finished"
fi
for r in $(seq "$scrub_rounds"); do
    for side in on off idle; do
        if [ "$side" = off ]; then start --scrub-rate 0; else start; fi
        [ "$(x_cache "$SMALL_ID")" = hit-disk ] || die "the 1 MiB blob is not a disk hit"
        read -r before _ _ < <(scrub_progress)
        if [ "$side" = idle ]; then sleep "$DURATION"; rps=0; else rps="$(wrk_rps)"; fi
        read -r after rate _ < <(scrub_progress)
        stop
        mib=$(( (after - before) >> 20 ))
        log "round $r scrub $side: $rps req/s, the scrub checked $mib MiB in the window (achieved $((rate >> 20)) MiB/s)"
        case "$side" in
            on) on_rps+=("$rps"); on_mib+=("$mib") ;;
            off) off_rps+=("$rps") ;;
            idle) idle_mib+=("$mib") ;;
        esac
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
    echo "| MiB the scrub checked per ${DURATION} s window | ${on_mib[*]} | 0 | |"
    echo "| MiB checked per ${DURATION} s window with no requests | ${idle_mib[*]} | | |"
} | tee "$OUT/summary.md"
