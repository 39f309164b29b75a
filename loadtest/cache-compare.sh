#!/usr/bin/env bash
# Tiered-cache hit throughput of the gateway vs nginx static files, nginx proxy_cache and
# Varnish, same bytes, same workload, one run (issue 5's benchmark).
#
# Servers (each one worker where that applies, all pinned to CPU $SERVER_CPU):
#   nginx-static  nginx serving the blobs as files (shared/bench/nginx-origin.conf settings)
#   nginx-proxy   nginx proxy_cache in front of nginx-static (shared/bench/nginx-proxy.conf),
#                 warmed first: every measured request is a HIT
#   varnish       Varnish (shared/bench/varnish.vcl, malloc storage, thread_pools=1) in front of
#                 nginx-static, warmed first
#   gw-memory     walrus-gateway, embedded storage-sim, every blob filled once: memory hits
#   gw-disk       walrus-gateway with --cache-dir and a memory tier that cannot hold the blobs
#                 (--memory-max-object below the smallest blob): disk hits, page cache warm
#   gw-disk-base  the same as gw-disk with the binary $GATEWAY_BASE_BIN (a before/after
#                 comparison of two builds in one run; not in the default SERVERS)
# Load (pinned to CPU $CLIENT_CPU): wrk (HTTP/1.1) and h2load (HTTP/2 with prior knowledge),
# $CONNECTIONS connections, one URL per size, $WARMUP of warm-up then $DURATION measured, for
# $ROUNDS rounds (servers interleaved within each round); the table shows medians over rounds.
# Every server's bytes are checked against the source file (and its X-Cache against the tier
# it is supposed to serve from) before the runs. Missing Debian packages (nginx, wrk,
# nghttp2-client for h2load, varnish, curl) are installed; everything started is stopped by PID.
#
#   loadtest/cache-compare.sh
#   SIZES=4KiB ROUNDS=1 DURATION=5 SERVERS="nginx-static gw-memory" loadtest/cache-compare.sh
#
# Knobs (environment): SIZES, PROTOS ("1 2"), SERVERS, DURATION and WARMUP (seconds), ROUNDS,
# CONNECTIONS, H2_STREAMS (streams per h2load connection, default 1), SHARDS, PROFILE,
# GATEWAY_BIN / LOADTEST_BIN (skip the build), GATEWAY_BASE_BIN (for gw-disk-base), OUT,
# SERVER_CPU / CLIENT_CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZES="${SIZES:-4KiB 1MiB 64MiB}"
PROTOS="${PROTOS:-1 2}"
SERVERS="${SERVERS:-nginx-static nginx-proxy varnish gw-memory gw-disk}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
H2_STREAMS="${H2_STREAMS:-1}"
# 100 shards: the smallest round committee whose maximum blob size (~149 MB) holds 64 MiB.
SHARDS="${SHARDS:-100}"
PROFILE="${PROFILE:-release}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-cache-compare.XXXXXX)}"

LOG_TAG=cache-compare
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

has() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- tools -----------------------------------------------------------------------------------
NGINX="$(need nginx "nginx-light|nginx")"
WRK="$(need wrk wrk)"
H2LOAD="$(need h2load nghttp2-client)"
CURL="$(need curl curl)"
VARNISHD=""
if has varnish; then VARNISHD="$(need varnishd varnish)"; fi
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
"$NGINX" -V 2>&1 | grep -q -- '--with-http_v2_module' || die "this nginx has no HTTP/2 module"
SIM_BIN="${SIM_BIN:-unused}"
build_binaries "$ROOT" "$PROFILE"

# --- blobs -----------------------------------------------------------------------------------
mkdir -p "$OUT/data" "$OUT/www/v1/blobs" "$OUT/logs"
chmod 755 "$OUT"
seeds=()
min_bytes=""
for size in $SIZES; do
    n="$(bytes_of "$size")"
    head -c "$n" /dev/urandom > "$OUT/data/$size.bin"
    seeds+=(--seed "$OUT/data/$size.bin")
    if [ -z "$min_bytes" ] || [ "$n" -lt "$min_bytes" ]; then min_bytes="$n"; fi
done

# --- gateways --------------------------------------------------------------------------------
ADMIN_TOKEN="bench-$RANDOM$RANDOM"
GW_MEM_PORT="$(free_port)"
GW_DISK_PORT="$(free_port)"
GW_BASE_PORT="$(free_port)"
declare -A ID
if has gw-memory || has gw-disk || has nginx-static || has nginx-proxy || has varnish; then
    log "starting the memory-hit gateway on :$GW_MEM_PORT (embedded storage-sim, $SHARDS shards)"
    start_gateway "$GW_MEM_PORT" "$OUT/gw-memory.out" "$OUT/logs/gw-memory.log" \
        --sim-shards "$SHARDS" "${seeds[@]}" --memory-cache 1GiB
    mapfile -t ids < <(grep -v '^listening on' "$OUT/gw-memory.out")
    k=0
    for size in $SIZES; do ID[$size]="${ids[$k]}"; k=$((k + 1)); done
fi
declare -A DISK_PORT=([gw-disk]="$GW_DISK_PORT" [gw-disk-base]="$GW_BASE_PORT")
for disk_server in gw-disk gw-disk-base; do
    has "$disk_server" || continue
    bin="$GATEWAY_BIN"
    if [ "$disk_server" = gw-disk-base ]; then
        [ -x "${GATEWAY_BASE_BIN:-}" ] || die "gw-disk-base needs GATEWAY_BASE_BIN (a walrus-gateway binary)"
        bin="$GATEWAY_BASE_BIN"
    fi
    # The memory tier takes no blob of these sizes, so every hit is read from the disk tier.
    small=$(( min_bytes / 2 ))
    port="${DISK_PORT[$disk_server]}"
    log "starting the disk-hit gateway $disk_server on :$port (--cache-dir, --memory-max-object $small)"
    rm -rf "$OUT/$disk_server-cache"
    GATEWAY_BIN="$bin" start_gateway "$port" "$OUT/$disk_server.out" "$OUT/logs/$disk_server.log" \
        --sim-shards "$SHARDS" "${seeds[@]}" --cache-dir "$OUT/$disk_server-cache" \
        --memory-cache 1MiB --memory-max-object "$small" --admin-token "$ADMIN_TOKEN"
    mapfile -t ids < <(grep -v '^listening on' "$OUT/$disk_server.out")
    k=0
    for size in $SIZES; do
        [ "${ids[$k]}" = "${ID[$size]}" ] || die "the gateways disagree on the Blob ID of $size"
        k=$((k + 1))
    done
done
for size in $SIZES; do ln -f "$OUT/data/$size.bin" "$OUT/www/v1/blobs/${ID[$size]}"; done
chmod -R a+rX "$OUT/www" "$OUT/data"

# --- nginx static (origin) and nginx proxy_cache ---------------------------------------------
ORIGIN_PORT="$(free_port)"; ORIGIN_H2_PORT="$(free_port)"
PROXY_PORT="$(free_port)"; PROXY_H2_PORT="$(free_port)"
VARNISH_PORT="$(free_port)"
MASK="$(cpu_mask "$SERVER_CPU")"
nginx_common="worker_processes 1;
worker_cpu_affinity $MASK;
daemon off;
master_process on;
events { worker_connections 4096; use epoll; multi_accept on; }"
http_common="access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 256;
    open_file_cache max=1000 inactive=60s;"
cat > "$OUT/nginx-origin.conf" <<EOF
# shared/bench/nginx-origin.conf on free ports; the second port speaks h2c (prior knowledge).
$nginx_common
pid origin.pid;
error_log logs/origin-error.log warn;
http {
    $http_common
    default_type application/octet-stream;
    open_file_cache_valid 60s;
    server { listen 127.0.0.1:$ORIGIN_PORT backlog=4096; root www; location / { } }
    # sendfile off on h2c: with sendfile, nginx 1.22 stalls each small HTTP/2 response for a
    # delayed ACK (~44 ms; 22 req/s per connection instead of 38k with h2load -c1).
    server { listen 127.0.0.1:$ORIGIN_H2_PORT http2 backlog=4096; sendfile off; root www; location / { } }
}
EOF
proxy_location="location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache blobs;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_buffering on;
            proxy_buffers 64 16k;
            add_header X-Cache \$upstream_cache_status;
        }"
cat > "$OUT/nginx-proxy.conf" <<EOF
# shared/bench/nginx-proxy.conf on free ports, in front of the origin above; the second port
# speaks h2c (sendfile off, as on the origin). max_size leaves room for every blob of the run.
$nginx_common
pid proxy.pid;
error_log logs/proxy-error.log warn;
http {
    $http_common
    proxy_cache_path cache levels=1:2 keys_zone=blobs:10m max_size=4g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 32; }
    server { listen 127.0.0.1:$PROXY_PORT backlog=4096; $proxy_location }
    server { listen 127.0.0.1:$PROXY_H2_PORT http2 backlog=4096; sendfile off; $proxy_location }
}
EOF
rm -rf "$OUT/cache"
log "starting nginx $NGINX_VERSION: origin :$ORIGIN_PORT (h2c :$ORIGIN_H2_PORT)"
"${PIN_SERVER[@]}" "$NGINX" -p "$OUT/" -c nginx-origin.conf > "$OUT/logs/origin.out" 2>&1 &
track $!
wait_port "$ORIGIN_PORT" "nginx (origin)"
if has nginx-proxy; then
    log "starting nginx proxy_cache :$PROXY_PORT (h2c :$PROXY_H2_PORT)"
    "${PIN_SERVER[@]}" "$NGINX" -p "$OUT/" -c nginx-proxy.conf > "$OUT/logs/proxy.out" 2>&1 &
    track $!
    wait_port "$PROXY_PORT" "nginx (proxy)"
fi

# --- Varnish ---------------------------------------------------------------------------------
VARNISH_VERSION=""
if has varnish; then
    VARNISH_VERSION="$("$VARNISHD" -V 2>&1 | head -1 | sed -E 's/.*varnish-([0-9.]+).*/\1/')"
    cat > "$OUT/varnish.vcl" <<EOF
vcl 4.1;
# shared/bench/varnish.vcl, in front of the nginx origin on its free port.
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
sub vcl_backend_response { set beresp.ttl = 1h; }
sub vcl_deliver {
    if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
EOF
    rm -rf "$OUT/varnish-work"; mkdir -p "$OUT/varnish-work"
    log "starting Varnish $VARNISH_VERSION :$VARNISH_PORT (thread_pools=1, malloc storage, http2 on)"
    "${PIN_SERVER[@]}" "$VARNISHD" -F -j none -n "$OUT/varnish-work" -a "127.0.0.1:$VARNISH_PORT" \
        -f "$OUT/varnish.vcl" -s malloc,4G -p thread_pools=1 -p feature=+http2 \
        > "$OUT/logs/varnish.out" 2>&1 &
    track $!
    wait_port "$VARNISH_PORT" "varnishd"
fi

url_of() { # server, proto, size
    local id="${ID[$3]}" port
    case "$1:$2" in
        nginx-static:1) port="$ORIGIN_PORT" ;;
        nginx-static:2) port="$ORIGIN_H2_PORT" ;;
        nginx-proxy:1) port="$PROXY_PORT" ;;
        nginx-proxy:2) port="$PROXY_H2_PORT" ;;
        varnish:*) port="$VARNISH_PORT" ;;
        gw-memory:*) port="$GW_MEM_PORT" ;;
        gw-disk:*) port="$GW_DISK_PORT" ;;
        gw-disk-base:*) port="$GW_BASE_PORT" ;;
        *) die "unknown server $1" ;;
    esac
    echo "http://127.0.0.1:$port/v1/blobs/$id"
}

expected_cache() { # server -> the X-Cache value a measured request must carry ("" = none)
    case "$1" in
        nginx-proxy|varnish) echo HIT ;;
        gw-memory) echo hit-memory ;;
        gw-disk|gw-disk-base) echo hit-disk ;;
        *) echo "" ;;
    esac
}

# --- warm and check ----------------------------------------------------------------------------
# A request's X-Cache value, after checking its body is the source file byte for byte.
fetch_check() { # server, proto, size
    local url body headers sum want cache
    url="$(url_of "$1" "$2" "$3")"
    body="$OUT/check.body"; headers="$OUT/check.headers"
    local flag=--http1.1
    [ "$2" = 2 ] && flag=--http2-prior-knowledge
    "$CURL" -sS "$flag" -o "$body" -D "$headers" "$url" || die "$1 HTTP/$2: cannot fetch $3"
    head -1 "$headers" | grep -q ' 200' || die "$1 HTTP/$2 $3: $(head -1 "$headers")"
    sum="$(sha256sum < "$body" | cut -d' ' -f1)"
    want="$(sha256sum < "$OUT/data/$3.bin" | cut -d' ' -f1)"
    [ "$sum" = "$want" ] || die "$1 HTTP/$2 $3: wrong bytes"
    cache="$( (grep -i '^x-cache:' "$headers" || true) | head -1 | cut -d: -f2 | tr -d ' \r')"
    rm -f "$body"
    echo "$cache"
}

wait_disk_entries() { # port, count
    for _ in $(seq 600); do
        if "$CURL" -sf -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$1/admin/cache" |
            python3 -c "import json,sys; d=json.load(sys.stdin)['disk']; sys.exit(0 if d['entries'] >= $2 else 1)"; then
            return 0
        fi
        sleep 0.1
    done
    die "the disk tier on :$1 did not reach $2 entries"
}

for server in $SERVERS; do
    for size in $SIZES; do
        fetch_check "$server" 1 "$size" > /dev/null # fills the caches (and the page cache)
    done
    case "$server" in
        gw-disk|gw-disk-base) wait_disk_entries "${DISK_PORT[$server]}" "$(echo "$SIZES" | wc -w)" ;;
    esac
    for size in $SIZES; do
        for proto in $PROTOS; do
            want="$(expected_cache "$server")"
            got="$(fetch_check "$server" "$proto" "$size")"
            [ "$got" = "$want" ] || die "$server HTTP/$proto $size: X-Cache '$got', expected '$want'"
        done
    done
    log "$server serves the right bytes${want:+ as $want} over $(echo "$PROTOS" | sed 's/ /, /') for $SIZES"
done

# --- runs ------------------------------------------------------------------------------------
# One line per run: round size proto server req/s bytes/s p50_ms p99_ms errors
RESULTS="$OUT/runs.tsv"
: > "$RESULTS"

wrk_run() { # url, seconds, report file -> "req/s bytes/s p50_ms p99_ms errors"
    "${PIN_CLIENT[@]}" "$WRK" -t1 -c"$CONNECTIONS" -d"${2}s" --timeout 120s --latency "$1" > "$3" 2>&1 || true
    python3 - "$3" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def unit(v, u, table):
    return float(v) * table[u]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
tps = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.M))
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[m.group(2)]
errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if sock:
    errors += sum(int(x) for x in sock.groups())
if not rps:
    print("0 0 0 0 -1"); sys.exit()
bps = unit(tps.group(1), tps.group(2), {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3})
print(f"{float(rps.group(1)):.1f} {bps:.0f} {ms(lat.get('50', '0us')):.3f} {ms(lat.get('99', '0us')):.3f} {errors}")
EOF
}

h2load_run() { # url, seconds, report file -> "req/s bytes/s mean_ms - errors"
    "${PIN_CLIENT[@]}" "$H2LOAD" -t1 -c"$CONNECTIONS" -m"$H2_STREAMS" -D "$2" "$1" > "$3" 2>&1 || true
    python3 - "$3" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
fin = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", text)
req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
if not fin or not req:
    print("0 0 0 0 -1"); sys.exit()
bps = float(fin.group(4)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[fin.group(5)]
mean = float(lat.group(5)) * {"us": 1e-3, "ms": 1, "s": 1e3}[lat.group(6)] if lat else 0
errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7))
st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
if st:
    errors += int(st.group(3)) + int(st.group(4))
print(f"{float(fin.group(3)):.1f} {bps:.0f} {mean:.3f} 0 {errors}")
EOF
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
START_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
log "runs: $ROUNDS round(s) x sizes [$SIZES] x HTTP/[$PROTOS] x [$SERVERS], ${WARMUP}s warm-up + ${DURATION}s each"
for round in $(seq "$ROUNDS"); do
    for size in $SIZES; do
        for proto in $PROTOS; do
            for server in $SERVERS; do
                url="$(url_of "$server" "$proto" "$size")"
                report="$OUT/runs/r$round-$size-http$proto-$server.txt"
                mkdir -p "$OUT/runs"
                if [ "$proto" = 1 ]; then
                    [ "$WARMUP" -gt 0 ] && wrk_run "$url" "$WARMUP" "$report.warmup" > /dev/null
                    line="$(wrk_run "$url" "$DURATION" "$report")"
                else
                    [ "$WARMUP" -gt 0 ] && h2load_run "$url" "$WARMUP" "$report.warmup" > /dev/null
                    line="$(h2load_run "$url" "$DURATION" "$report")"
                fi
                printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$size" "$proto" "$server" "${line// /$'\t'}" >> "$RESULTS"
                log "round $round $size HTTP/$proto $server: $line"
            done
        done
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# Every cached server must still have answered from the tier it was meant to (no evictions).
for server in $SERVERS; do
    want="$(expected_cache "$server")"
    [ -n "$want" ] || continue
    for size in $SIZES; do
        got="$(fetch_check "$server" 1 "$size")" || { log "WARNING: the check after the runs failed for $server $size"; continue; }
        [ "$got" = "$want" ] || log "WARNING: after the runs $server $size answers X-Cache '$got'"
    done
done

# --- table -----------------------------------------------------------------------------------
python3 - "$RESULTS" "$OUT/summary.md" "$SERVERS" <<EOF
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
servers = sys.argv[3].split()
peers = [s for s in servers if not s.startswith("gw-")]
gws = [s for s in servers if s.startswith("gw-")] or ["gw-memory", "gw-disk"]
runs = defaultdict(list)
for r in rows:
    rnd, size, proto, server, rps, bps, p50, p99, errs = r
    runs[(size, proto, server)].append((float(rps), float(bps), float(p50), float(p99), int(errs)))
def med(key, i):
    v = [x[i] for x in runs.get(key, [])]
    return statistics.median(v) if v else 0.0
def fmt_rps(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
sizes = "$SIZES".split(); protos = "$PROTOS".split()
out = []
out.append("| size | HTTP | " + " | ".join(f"{s} req/s (GB/s)" for s in servers) + " | best peer | " + " | ".join(f"{g} ÷ best" for g in gws) + " |")
out.append("|---" * (len(servers) + 3 + len(gws)) + "|")
rounds = sorted({r[0] for r in rows}, key=int)
per_round = []
lat = []
lat.append("| size | HTTP | " + " | ".join(servers) + " |")
lat.append("|---" * (len(servers) + 2) + "|")
for size in sizes:
    for proto in protos:
        cells = []
        for s in servers:
            k = (size, proto, s)
            cells.append(f"{fmt_rps(med(k, 0))} ({med(k, 1) / 1e9:.2f})")
        # Large blobs: few requests complete in a run (64 connections x 64 MiB is seconds of
        # transfer), so compare bytes/s, which counts partial responses too; else req/s.
        basis = 1 if int("$(for s in $SIZES; do echo -n "$s=$(bytes_of "$s") "; done)".split(size + "=")[1].split()[0]) >= (16 << 20) else 0
        best = max(peers, key=lambda s: med((size, proto, s), basis)) if peers else None
        b = med((size, proto, best), basis) if best else 0
        ratio = lambda s: (f"**{med((size, proto, s), basis) / b:.2f}**" + (" (GB/s)" if basis else "") if b and s in servers else "–")
        out.append(f"| {size} | {'1.1' if proto == '1' else '2'} | " + " | ".join(cells) +
                   f" | {best or '–'} | " + " | ".join(ratio(g) for g in gws) + " |")
        # Each round against the best peer of that round.
        def one(rnd, s):
            v = [x for x in rows if x[0] == rnd and x[1] == size and x[2] == proto and x[3] == s]
            return float(v[0][4 + basis]) if v else 0.0
        for g in gws:
            if g not in servers or not peers:
                continue
            parts = []
            for rnd in rounds:
                b_r = max(one(rnd, p) for p in peers)
                parts.append(f"{one(rnd, g) / b_r:.2f}" if b_r else "–")
            per_round.append(f"| {size} | {'1.1' if proto == '1' else '2'} | {g} | " + " / ".join(parts) + " |")
        if proto == "1":
            lat.append(f"| {size} | 1.1 | " + " | ".join(f"{med((size, proto, s), 2):.2f} / {med((size, proto, s), 3):.2f}" for s in servers) + " |")
        else:
            lat.append(f"| {size} | 2 | " + " | ".join(f"{med((size, proto, s), 2):.2f}" for s in servers) + " |")
errors = sum(x[4] for v in runs.values() for x in v)
text = "\n".join(out) + "\n\nPer round, ÷ the best peer of that round:\n\n| size | HTTP | server | rounds |\n|---|---|---|---|\n" + "\n".join(per_round) + "\n\nLatency, ms (HTTP/1.1: wrk p50 / p99; HTTP/2: h2load mean):\n\n" + "\n".join(lat) + "\n"
text += f"\nRatios: req/s for blobs under 16 MiB, bytes/s (marked GB/s) for larger ones. Errors (non-2xx, socket errors, failed or timed-out requests) over all runs: {errors}.\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
{
    echo
    echo "Started $START_DATE; load average before / after: $LOAD_BEFORE / $LOAD_AFTER; $(nproc) CPUs, $(uname -r)."
    echo "nginx $NGINX_VERSION (one worker)${VARNISH_VERSION:+, Varnish $VARNISH_VERSION (thread_pools=1, malloc)}, walrus-gateway (embedded"
    echo "storage-sim, $SHARDS shards) pinned to CPU $SERVER_CPU; $("$WRK" -v 2>&1 | head -1 | cut -d' ' -f1-2) -t1 and $("$H2LOAD" --version | head -1) -t1 -m$H2_STREAMS"
    echo "on CPU $CLIENT_CPU; $CONNECTIONS connections, one URL per size, ${WARMUP}s warm-up + ${DURATION}s, median of $ROUNDS round(s)."
} | tee -a "$OUT/summary.md"
log "reports in $OUT (runs.tsv, runs/, summary.md)"
