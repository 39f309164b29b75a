#!/usr/bin/env bash
# Gateway cache hits over HTTP/3 vs HTTP/2 over TLS, on one machine, in one run (issue 8).
#
# Starts one `walrus-gateway serve` (embedded storage-sim seeded with the blobs, a self-signed
# certificate written for the client) with --https-listen and --h3-listen on the same port
# number (TCP and UDP), pinned to CPU 0, and drives it with walrus-loadtest (pinned to CPU 1),
# `--preset hit`, over HTTP/2 (TLS, ALPN h2) and HTTP/3 (QUIC) alternately, ROUNDS times per
# blob size. Prints one line per size with the medians of both protocols and the HTTP/3 /
# HTTP/2 ratios, and writes the JSON reports and a Markdown table (summary.md) to $OUT.
# Everything it starts is stopped by PID on exit.
#
#   loadtest/h3-compare.sh                        # release build, defaults below
#   SIZES="1MiB" ROUNDS=1 DURATION=5s loadtest/h3-compare.sh
#
# Knobs (environment): SIZES, ROUNDS, DURATION, WARMUP, CONCURRENCY, CONNECTIONS,
# BLOBS_PER_SIZE, SHARDS, VERIFY_SAMPLE, PROFILE (cargo profile, default release), GATEWAY_BIN /
# LOADTEST_BIN (skip the build), OUT (output directory), SERVER_CPU / CLIENT_CPU,
# H3_MAX_UDP_PAYLOAD (the gateway's --h3-max-udp-payload; default 65507, the largest IPv4 UDP
# payload on loopback, whose 64 KiB MTU TCP uses too; 1452 for the internet-safe default).
# Files go to /dev/shm when it exists, so the blobs need no disk space.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZES="${SIZES:-1MiB 64MiB}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-32}"
CONNECTIONS="${CONNECTIONS:-4}"
BLOBS_PER_SIZE="${BLOBS_PER_SIZE:-4}"
# 100 shards: the smallest round committee whose maximum blob size (~149 MB) holds 64 MiB.
SHARDS="${SHARDS:-100}"
VERIFY_SAMPLE="${VERIFY_SAMPLE:-0.1%}"
PROFILE="${PROFILE:-release}"
H3_MAX_UDP_PAYLOAD="${H3_MAX_UDP_PAYLOAD:-65507}"
TMP_ROOT=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && TMP_ROOT=/dev/shm
OUT="${OUT:-$(mktemp -d "$TMP_ROOT/walrus-h3-compare.XXXXXX")}"

LOG_TAG=h3-compare
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

[ "$ROUNDS" -ge 1 ] 2>/dev/null || die "ROUNDS must be a positive number, got $ROUNDS"

# A port free for both TCP and UDP, so HTTPS and HTTP/3 share its number as in production.
free_tcp_udp_port() {
    python3 - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    u.close()
    t.close()
    print(port)
    break
EOF
}

# --- binaries --------------------------------------------------------------------------------
SIM_BIN="${SIM_BIN:-unused}"
build_binaries "$ROOT" "$PROFILE"

# --- blobs -----------------------------------------------------------------------------------
make_seed_blobs "$OUT/data" "$SIZES" "$BLOBS_PER_SIZE"
n_seeds=$(( ${#seeds[@]} / 2 ))

# --- gateway ---------------------------------------------------------------------------------
PLAIN_PORT="$(free_port)"
PORT="$(free_tcp_udp_port)"
[ -n "$PORT" ] && [ "$PORT" != "$PLAIN_PORT" ] || die "no free port"
CACERT="$OUT/gateway.pem"
log "starting walrus-gateway: HTTPS and HTTP/3 on 127.0.0.1:$PORT (embedded storage-sim, $SHARDS shards, seeding $n_seeds blobs)"
RUST_LOG=warn "${PIN_SERVER[@]}" "$GATEWAY_BIN" serve --listen "127.0.0.1:$PLAIN_PORT" \
    --https-listen "127.0.0.1:$PORT" --h3-listen "127.0.0.1:$PORT" \
    --h3-max-udp-payload "$H3_MAX_UDP_PAYLOAD" \
    --tls-self-signed --tls-self-signed-out "$CACERT" \
    --sim-shards "$SHARDS" "${seeds[@]}" --no-disk-cache > "$OUT/gateway.out" 2> "$OUT/gateway.log" &
GATEWAY_PID=$!
track "$GATEWAY_PID"
for _ in $(seq 1200); do
    grep -q '^listening on HTTP/3' "$OUT/gateway.out" 2>/dev/null && break
    kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway exited: $(tail -3 "$OUT/gateway.log")"
    sleep 0.1
done
grep -q '^listening on HTTP/3' "$OUT/gateway.out" || die "the gateway did not start its HTTP/3 listener"
# Blob IDs are the lines that are neither the certificate's fingerprint nor a listener.
mapfile -t IDS < <(grep -v -e '^listening on' -e '^self-signed' "$OUT/gateway.out" | head -n "$n_seeds")
[ "${#IDS[@]}" -eq "$n_seeds" ] || die "the gateway printed ${#IDS[@]} Blob IDs for $n_seeds seeds"
k=0
for size in $SIZES; do
    : > "$OUT/blobs-$size.txt"
    for _ in $(seq "$BLOBS_PER_SIZE"); do
        echo "${IDS[$k]} $(bytes_of "$size")" >> "$OUT/blobs-$size.txt"
        k=$((k + 1))
    done
done

# --- runs ------------------------------------------------------------------------------------
drive() { # proto, size, round -> json path
    local proto="$1" size="$2" round="$3"
    local json="$OUT/$size-http$proto-r$round.json"
    "${PIN_CLIENT[@]}" "$LOADTEST_BIN" --target "https://127.0.0.1:$PORT" --cacert "$CACERT" \
        --http "$proto" --connections "$CONNECTIONS" --blobs "$OUT/blobs-$size.txt" \
        --n-shards "$SHARDS" --preset hit --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --warmup "$WARMUP" --verify-sample "$VERIFY_SAMPLE" --no-progress --json "$json" \
        > "$OUT/$size-http$proto-r$round.txt"
    echo "$json"
}

# Medians over the rounds of one size and protocol: req/s, GB/s, p50 ms, p99 ms, errors.
medians() { # json files...
    python3 - "$@" <<'EOF'
import json, statistics, sys
reports = [json.load(open(p)) for p in sys.argv[1:]]
med = lambda xs: statistics.median(xs)
print(round(med([r["throughput_rps"] for r in reports]), 1),
      round(med([r["bytes_per_sec"] for r in reports]) / 1e9, 3),
      round(med([r["latency_us"]["p50"] for r in reports]) / 1e3, 2),
      round(med([r["latency_us"]["p99"] for r in reports]) / 1e3, 2),
      sum(r["errors"] for r in reports))
EOF
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
summary="$OUT/summary.md"
{
    echo "| size | HTTP/2 req/s | HTTP/3 req/s | h3/h2 | HTTP/2 GB/s | HTTP/3 GB/s | HTTP/2 p50 / p99 (ms) | HTTP/3 p50 / p99 (ms) | p99 h3/h2 | errors (h2/h3) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$summary"
printf '%-6s %11s %11s %6s %9s %9s %17s %17s %6s\n' size h2_req/s h3_req/s h3/h2 h2_GB/s h3_GB/s h2_p50/p99_ms h3_p50/p99_ms p99_x
for size in $SIZES; do
    h2=()
    h3=()
    for round in $(seq "$ROUNDS"); do
        # Alternate which goes first, so drift in the machine's load hits both alike.
        if [ $(( round % 2 )) -eq 1 ]; then
            h2+=("$(drive 2 "$size" "$round")")
            h3+=("$(drive 3 "$size" "$round")")
        else
            h3+=("$(drive 3 "$size" "$round")")
            h2+=("$(drive 2 "$size" "$round")")
        fi
    done
    read -r r2 b2 p50_2 p99_2 e2 < <(medians "${h2[@]}")
    read -r r3 b3 p50_3 p99_3 e3 < <(medians "${h3[@]}")
    ratio="$(python3 -c "print(round($r3 / $r2, 2) if $r2 else 'n/a')")"
    p99x="$(python3 -c "print(round($p99_3 / $p99_2, 2) if $p99_2 else 'n/a')")"
    printf '%-6s %11s %11s %6s %9s %9s %17s %17s %6s\n' "$size" "$r2" "$r3" "$ratio" "$b2" "$b3" \
        "$p50_2 / $p99_2" "$p50_3 / $p99_3" "$p99x"
    [ "$e2" = 0 ] && [ "$e3" = 0 ] || log "errors in $size: HTTP/2 $e2, HTTP/3 $e3 (see $OUT/$size-*.txt)"
    echo "| $size | $r2 | $r3 | $ratio | $b2 | $b3 | $p50_2 / $p99_2 | $p50_3 / $p99_3 | $p99x | $e2 / $e3 |" >> "$summary"
done
{
    echo
    echo "walrus-gateway (embedded storage-sim, $SHARDS shards, self-signed certificate, --h3-max-udp-payload $H3_MAX_UDP_PAYLOAD) pinned to CPU $SERVER_CPU;"
    echo "walrus-loadtest on CPU $CLIENT_CPU: --preset hit, $BLOBS_PER_SIZE blobs per size, Zipf 1, concurrency $CONCURRENCY,"
    echo "$CONNECTIONS connections, $DURATION after $WARMUP warm-up; medians of $ROUNDS alternating rounds; ratio = HTTP/3 / HTTP/2."
    echo "$(nproc) CPUs, $(uname -r). Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)."
} >> "$summary"
log "reports and summary in $OUT"
