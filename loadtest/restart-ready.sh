#!/usr/bin/env bash
# Restart-to-ready time of the gateway's disk tier (issue 5): fill the disk tier with $BLOBS
# blobs of $SIZE through `PUT /v1/blobs`, stop the gateway, start it again on the same
# --cache-dir, and measure from the exec of the new process:
#   listen     the TCP port accepts
#   status     the first `GET /status` answered (first served request)
#   blob       the first `GET /v1/blobs/{id}` of a cached blob answered, and its X-Cache
#   ready      `GET /admin/cache` reports the background index rebuild finished
# and, between the first answer and `ready`, how the cached blobs asked for (a new one each
# time) were answered: hit-disk / hit-memory / miss (refilled from the nodes). $ROUNDS restarts;
# the summary gives each round and the medians.
#
# The storage nodes are a separate `walrus-sim` process (kept running across the restart, so a
# miss can be refilled); the gateway is pinned to CPU $SERVER_CPU, the sim and the client to
# CPU $CLIENT_CPU. With DROP_CACHES=1 (root, and a kernel that allows it) the page cache is
# dropped before each restart; otherwise it is warm.
#
#   loadtest/restart-ready.sh
#   BLOBS=1000 ROUNDS=1 loadtest/restart-ready.sh
#
# Knobs (environment): BLOBS, SIZE, ROUNDS, SHARDS, PUT_CONCURRENCY, DROP_CACHES, PROFILE,
# GATEWAY_BIN / SIM_BIN / LOADTEST_BIN (skip the build), OUT, SERVER_CPU / CLIENT_CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BLOBS="${BLOBS:-10000}"
SIZE="${SIZE:-4KiB}"
ROUNDS="${ROUNDS:-3}"
SHARDS="${SHARDS:-10}"
PUT_CONCURRENCY="${PUT_CONCURRENCY:-8}"
DROP_CACHES="${DROP_CACHES:-0}"
PROFILE="${PROFILE:-release}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-restart.XXXXXX)}"

LOG_TAG=restart-ready
# shellcheck source=bench-lib.sh
. "$ROOT/loadtest/bench-lib.sh"

build_binaries "$ROOT" "$PROFILE"
[ -x "$SIM_BIN" ] || die "no walrus-sim binary at $SIM_BIN"
CURL="$(need curl curl)"

mkdir -p "$OUT/logs"
CACHE_DIR="$OUT/cache"
rm -rf "$CACHE_DIR" "$OUT/committee.json"
TOKEN="bench-$RANDOM$RANDOM"

# --- storage nodes -----------------------------------------------------------------------------
start_sim "$SHARDS" "$OUT/committee.json" "$OUT/logs"

GATEWAY_ARGS=(--committee "$OUT/committee.json" --cache-dir "$CACHE_DIR" --admin-token "$TOKEN")
PORT="$(free_port)"

# --- fill ----------------------------------------------------------------------------------------
log "starting the gateway on :$PORT and publishing $BLOBS blobs of $SIZE"
start_gateway "$PORT" "$OUT/gw-fill.out" "$OUT/logs/gw-fill.log" "${GATEWAY_ARGS[@]}"
fill_start=$(date +%s.%N)
"${PIN_CLIENT[@]}" python3 - "$PORT" "$BLOBS" "$(bytes_of "$SIZE")" "$PUT_CONCURRENCY" "$OUT/ids.txt" <<'EOF'
import http.client, json, os, sys, threading
port, count, size, workers, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ids = [None] * count
errors = []
def work(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(k, count, workers):
        body = os.urandom(size)
        conn.request("PUT", "/v1/blobs", body=body)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            errors.append(f"{r.status} {data[:200]!r}")
            return
        answer = json.loads(data)
        obj = answer.get("newlyCreated", {}).get("blobObject") or answer.get("alreadyCertified")
        ids[i] = obj["blobId"]
threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
for t in threads: t.start()
for t in threads: t.join()
if errors or any(i is None for i in ids):
    sys.exit(f"publishing failed: {errors[:3]}")
open(out, "w").write("\n".join(ids) + "\n")
EOF
fill_end=$(date +%s.%N)
log "published $BLOBS blobs in $(python3 -c "print(round($fill_end - $fill_start, 1))") s; waiting for the disk tier to hold them"
for _ in $(seq 1200); do
    entries="$("$CURL" -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/admin/cache" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["entries"])')"
    [ "$entries" -ge "$BLOBS" ] && break
    sleep 0.1
done
[ "$entries" -ge "$BLOBS" ] || die "the disk tier holds $entries entries, expected $BLOBS"
stop_pid "$GW_PID"
files=$(find "$CACHE_DIR/blobs" -type f | wc -l)
du_bytes=$(du -sb "$CACHE_DIR/blobs" | cut -f1)
log "disk tier: $files files, $du_bytes bytes"

# --- restarts ----------------------------------------------------------------------------------
: > "$OUT/rounds.jsonl"
for round in $(seq "$ROUNDS"); do
    cache_state="page cache warm"
    if [ "$DROP_CACHES" = 1 ]; then
        if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
            cache_state="page cache dropped"
        else
            cache_state="page cache warm (could not drop it)"
        fi
    fi
    PORT="$(free_port)"
    "${PIN_CLIENT[@]}" python3 - "$GATEWAY_BIN" "$PORT" "$TOKEN" "$OUT/ids.txt" "$OUT/logs/gw-restart-$round.log" \
        "$cache_state" "${PIN_SERVER[*]:-}" "${GATEWAY_ARGS[@]}" >> "$OUT/rounds.jsonl" <<'EOF'
import http.client, json, os, random, signal, socket, subprocess, sys, time
gw, port, token, ids_file, log_path, cache_state, pin = sys.argv[1:8]
args = sys.argv[8:]
ids = open(ids_file).read().split()
random.seed(1)
random.shuffle(ids)
cmd = (pin.split() if pin else []) + [gw, "serve", "--bind", f"127.0.0.1:{port}"] + args
env = dict(os.environ, RUST_LOG="info")
log = open(log_path, "w")
t0 = time.monotonic()
proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
ms = lambda: round((time.monotonic() - t0) * 1000, 2)
result = {"cache": cache_state}
try:
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
            conn.connect()
            break
        except OSError:
            if proc.poll() is not None:
                sys.exit("the gateway exited during start")
            time.sleep(0.0005)
    result["listen_ms"] = ms()
    conn.request("GET", "/status"); r = conn.getresponse(); r.read()
    result["status_ms"] = ms(); result["status_code"] = r.status
    answers = {}
    first_blob = None
    k = 0
    ready_ms = None
    while ready_ms is None and ms() < 120_000:
        blob = ids[k % len(ids)]; k += 1
        conn.request("GET", f"/v1/blobs/{blob}"); r = conn.getresponse(); r.read()
        tag = f"{r.status} {r.getheader('x-cache', '-')}"
        answers[tag] = answers.get(tag, 0) + 1
        if first_blob is None:
            first_blob = {"ms": ms(), "answer": tag}
        conn.request("GET", "/admin/cache", headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse(); disk = json.loads(r.read())["disk"]
        if disk["index_ready"]:
            ready_ms = ms()
            result["indexed"] = disk["indexed_at_start"]
            result["entries"] = disk["entries"]
    result["first_blob_ms"] = first_blob["ms"]; result["first_blob"] = first_blob["answer"]
    result["ready_ms"] = ready_ms
    result["answers_before_ready"] = answers
    # After the rebuild every cached blob must be a hit.
    after = {}
    for blob in ids[k:k + 200]:
        conn.request("GET", f"/v1/blobs/{blob}"); r = conn.getresponse(); r.read()
        tag = f"{r.status} {r.getheader('x-cache', '-')}"
        after[tag] = after.get(tag, 0) + 1
    result["answers_after_ready_200"] = after
finally:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait()
print(json.dumps(result))
EOF
    log "round $round: $(tail -1 "$OUT/rounds.jsonl")"
done

python3 - "$OUT/rounds.jsonl" "$BLOBS" "$SIZE" "$files" "$du_bytes" <<'EOF' | tee "$OUT/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
blobs, size, files, du = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
print(f"{blobs} blobs of {size} on the disk tier ({files} files, {du / 2**20:.1f} MiB).\n")
print("| round | page cache | port open ms | first response (/status) ms | first blob ms (answer) | index rebuilt ms (entries) | blob answers before the rebuild finished | 200 blobs after |")
print("|---|---|---|---|---|---|---|---|")
for i, r in enumerate(rows, 1):
    print(f"| {i} | {r['cache']} | {r['listen_ms']} | {r['status_ms']} | {r['first_blob_ms']} ({r['first_blob']}) | "
          f"{r['ready_ms']} ({r.get('entries')}) | {r['answers_before_ready']} | {r['answers_after_ready_200']} |")
med = lambda key: statistics.median(r[key] for r in rows if r.get(key) is not None)
print(f"\nMedians: port open {med('listen_ms')} ms, first response {med('status_ms')} ms, "
      f"first blob {med('first_blob_ms')} ms, index rebuilt {med('ready_ms')} ms.")
EOF
log "reports in $OUT"
