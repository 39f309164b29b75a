#!/usr/bin/env bash
# Gateway cache hits vs nginx serving the same bytes as static files, on one machine, in one run.
#
# Starts nginx (one worker, as in shared/bench/nginx-origin.conf; installed from Debian if
# missing) and `walrus-gateway serve` with its embedded storage-sim seeded with the same blobs,
# both pinned to CPU 0, then drives each with the same walrus-loadtest workload (pinned to
# CPU 1): blobs of 4 KiB, 1 MiB and 64 MiB, over HTTP/1.1 and HTTP/2 (h2c), `--preset hit`.
# Prints one line per case with both figures and the gateway/nginx ratios, and writes the
# JSON reports and a Markdown table (summary.md) to $OUT. Everything it starts is stopped by
# PID on exit.
#
#   loadtest/compare.sh                      # release build, defaults below
#   SIZES="4KiB" PROTOS=1 DURATION=5s loadtest/compare.sh
#
# Knobs (environment): SIZES, PROTOS, DURATION, WARMUP, CONCURRENCY, BLOBS_PER_SIZE, SHARDS,
# VERIFY_SAMPLE, PROFILE (cargo profile, default release), GATEWAY_BIN / LOADTEST_BIN (skip the
# build), OUT (output directory), SERVER_CPU / CLIENT_CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZES="${SIZES:-4KiB 1MiB 64MiB}"
PROTOS="${PROTOS:-1 2}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-64}"
BLOBS_PER_SIZE="${BLOBS_PER_SIZE:-4}"
# 100 shards: the smallest round committee whose maximum blob size (~149 MB) holds 64 MiB.
SHARDS="${SHARDS:-100}"
VERIFY_SAMPLE="${VERIFY_SAMPLE:-0.1%}"
PROFILE="${PROFILE:-release}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-compare.XXXXXX)}"

LOG_TAG=compare
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

# --- nginx -----------------------------------------------------------------------------------
NGINX="$(need nginx "nginx-light|nginx")"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
NGINX_H2=1
"$NGINX" -V 2>&1 | grep -q -- '--with-http_v2_module' || NGINX_H2=""

# --- binaries --------------------------------------------------------------------------------
SIM_BIN="${SIM_BIN:-unused}"
build_binaries "$ROOT" "$PROFILE"

# --- blobs -----------------------------------------------------------------------------------
mkdir -p "$OUT/data" "$OUT/nginx/www/v1/blobs" "$OUT/nginx/logs"
chmod 755 "$OUT"
make_seed_blobs "$OUT/data" "$SIZES" "$BLOBS_PER_SIZE"

# --- gateway ---------------------------------------------------------------------------------
GATEWAY_PORT="$(free_port)"
log "starting walrus-gateway on 127.0.0.1:$GATEWAY_PORT (embedded storage-sim, $SHARDS shards, seeding $(( ${#seeds[@]} / 2 )) blobs)"
start_gateway "$GATEWAY_PORT" "$OUT/gateway.out" "$OUT/gateway.log" --sim-shards "$SHARDS" "${seeds[@]}"
mapfile -t IDS < <(grep -v '^listening on' "$OUT/gateway.out" | head -n $(( ${#seeds[@]} / 2 )))
[ "${#IDS[@]}" -eq $(( ${#seeds[@]} / 2 )) ] || die "the gateway printed ${#IDS[@]} Blob IDs for $(( ${#seeds[@]} / 2 )) seeds"

# The same bytes under the same paths for nginx, and one blob list per size.
k=0
for size in $SIZES; do
    : > "$OUT/blobs-$size.txt"
    for i in $(seq "$BLOBS_PER_SIZE"); do
        id="${IDS[$k]}"; k=$((k + 1))
        ln -f "$OUT/data/$size-$i.bin" "$OUT/nginx/www/v1/blobs/$id"
        echo "$id $(bytes_of "$size")" >> "$OUT/blobs-$size.txt"
    done
done
chmod -R a+rX "$OUT/nginx" "$OUT/data"

# --- nginx -----------------------------------------------------------------------------------
NGINX_H1_PORT="$(free_port)"
NGINX_H2_PORT="$(free_port)"
h2_server=""
if [ -n "$NGINX_H2" ]; then
    h2_server="server { listen 127.0.0.1:$NGINX_H2_PORT http2 backlog=4096; root www; location / { } }"
fi
cat > "$OUT/nginx/nginx.conf" <<EOF
# As shared/bench/nginx-origin.conf, on free ports; a second port speaks h2c (prior knowledge).
worker_processes 1;
worker_cpu_affinity $(cpu_mask "$SERVER_CPU");
daemon off;
master_process on;
pid origin.pid;
error_log logs/origin-error.log warn;
events { worker_connections 4096; use epoll; multi_accept on; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 256;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    server { listen 127.0.0.1:$NGINX_H1_PORT backlog=4096; root www; location / { } }
    $h2_server
}
EOF
log "starting nginx $NGINX_VERSION on 127.0.0.1:$NGINX_H1_PORT (HTTP/1.1)${NGINX_H2:+ and :$NGINX_H2_PORT (h2c)}"
"${PIN_SERVER[@]}" "$NGINX" -p "$OUT/nginx/" -c nginx.conf > "$OUT/nginx/logs/stdout.log" 2> "$OUT/nginx/logs/stderr.log" &
NGINX_PID=$!
track "$NGINX_PID"
wait_port "$NGINX_H1_PORT" "nginx"
[ -n "$NGINX_H2" ] && wait_port "$NGINX_H2_PORT" "nginx (h2c)"

# --- runs ------------------------------------------------------------------------------------
field() { # json file, python expression over `r`
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

drive() { # name, url, proto, size -> json path
    local name="$1" url="$2" proto="$3" size="$4"
    local json="$OUT/$size-http$proto-$name.json"
    "${PIN_CLIENT[@]}" "$LOADTEST_BIN" --target "$url" --blobs "$OUT/blobs-$size.txt" \
        --n-shards "$SHARDS" --preset hit --concurrency "$CONCURRENCY" --http "$proto" \
        --connections 4 --duration "$DURATION" --warmup "$WARMUP" --verify-sample "$VERIFY_SAMPLE" \
        --no-progress --json "$json" > "$OUT/$size-http$proto-$name.txt"
    echo "$json"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
summary="$OUT/summary.md"
{
    echo "| size | HTTP | nginx req/s | gateway req/s | ratio | nginx GB/s | gateway GB/s | nginx p50 / p99 (ms) | gateway p50 / p99 (ms) | p99 ratio | errors (nginx/gw) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > "$summary"
printf '%-6s %-5s %12s %12s %7s %9s %9s %17s %17s %6s\n' size http nginx_req/s gw_req/s ratio nginx_GB/s gw_GB/s nginx_p50/p99_ms gw_p50/p99_ms p99_x
for size in $SIZES; do
    for proto in $PROTOS; do
        if [ "$proto" = 2 ] && [ -z "$NGINX_H2" ]; then
            log "nginx has no HTTP/2 module: skipping $size over HTTP/2"
            continue
        fi
        nginx_port="$NGINX_H1_PORT"; [ "$proto" = 2 ] && nginx_port="$NGINX_H2_PORT"
        n_json="$(drive nginx "http://127.0.0.1:$nginx_port" "$proto" "$size")"
        g_json="$(drive gateway "http://127.0.0.1:$GATEWAY_PORT" "$proto" "$size")"
        nr="$(field "$n_json" 'round(r["throughput_rps"],1)')"
        gr="$(field "$g_json" 'round(r["throughput_rps"],1)')"
        nb="$(field "$n_json" 'round(r["bytes_per_sec"]/1e9,3)')"
        gb="$(field "$g_json" 'round(r["bytes_per_sec"]/1e9,3)')"
        np="$(field "$n_json" '"%.2f / %.2f" % (r["latency_us"]["p50"]/1e3, r["latency_us"]["p99"]/1e3)')"
        gp="$(field "$g_json" '"%.2f / %.2f" % (r["latency_us"]["p50"]/1e3, r["latency_us"]["p99"]/1e3)')"
        ne="$(field "$n_json" 'r["errors"]')"
        ge="$(field "$g_json" 'r["errors"]')"
        ratio="$(python3 -c "print(round($gr / $nr, 2) if $nr else 'n/a')")"
        p99x="$(python3 -c "import json; a=json.load(open('$g_json'))['latency_us']['p99']; b=json.load(open('$n_json'))['latency_us']['p99']; print(round(a / b, 2) if b else 'n/a')")"
        printf '%-6s %-5s %12s %12s %7s %9s %9s %17s %17s %6s\n' "$size" "$proto" "$nr" "$gr" "$ratio" "$nb" "$gb" "$np" "$gp" "$p99x"
        [ "$ne" = 0 ] && [ "$ge" = 0 ] || log "errors in $size HTTP/$proto: nginx $ne, gateway $ge (see $OUT/$size-http$proto-*.txt)"
        echo "| $size | $proto | $nr | $gr | $ratio | $nb | $gb | $np | $gp | $p99x | $ne / $ge |" >> "$summary"
    done
done
{
    echo
    echo "nginx $NGINX_VERSION (one worker) and walrus-gateway (embedded storage-sim, $SHARDS shards) pinned to CPU $SERVER_CPU;"
    echo "walrus-loadtest on CPU $CLIENT_CPU: --preset hit, $BLOBS_PER_SIZE blobs per size, Zipf 1, concurrency $CONCURRENCY,"
    echo "$DURATION after $WARMUP warm-up, HTTP/2 over 4 connections; ratio = gateway / nginx. $(nproc) CPUs, $(uname -r)."
    echo "Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a) (other work on the machine makes figures noisy)."
} >> "$summary"
log "reports and summary in $OUT"
