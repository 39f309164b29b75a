#!/usr/bin/env bash
# Stored-proof inference (issue 16): throughput of `"proof": "store"` requests with proofs batched
# into quilts against one blob per proof (`--proof-batch-max 0`), in the same run, and the
# encoded bytes Walrus stores per proof in each case.
#
#   GATEWAY_BIN=target/release/walrus-gateway LOADTEST_BIN=target/release/walrus-loadtest \
#   loadtest/proof-bench.sh
#
# Each (mode, concurrency, round) gets a fresh `walrus-gateway serve` with the embedded
# storage-sim on CPU 0 (so its counters are the run's), the built-in MLP published through it,
# and `walrus-loadtest --preset inference` on CPU 1 posting the MLP's reference inputs with
# `"proof": "store"` in a closed loop. Encoded bytes per proof come from the gateway's counters
# and the encoding config: n*(64n+32) + n*(kp+ks)*symbol_size per stored blob (SPEC §8), over
# the proofs it holds.
#
# A full queue (BURST > 0): BURST stored-proof requests whose inputs differ (so every proof is
# distinct, unlike the loadtest's one input), BURST_CONC at a time, against the default
# batching, so batches fill to what a quilt holds and are cut by encoded cost. Its encoded
# bytes per proof are exact: quilts·n(64n+32) + n(kp+ks)·(quilt bytes / (kp·ks)), over the
# proofs stored. MODES="" runs only the burst.
#
# Knobs (environment): MODES ("blob batch250 batch50"), CONCURRENCIES ("64 256"), ROUNDS (2),
# DURATION (10s), WARMUP (2s), SHARDS (100), BURST (0), BURST_CONC (100), OUT (a temp dir),
# SERVER_CPU / CLIENT_CPU (0 / 1).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODES="${MODES-blob batch250 batch50}"
CONCURRENCIES="${CONCURRENCIES:-64 256}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
SHARDS="${SHARDS:-100}"
BURST="${BURST:-0}"
BURST_CONC="${BURST_CONC:-100}"
OUT="${OUT:-$(mktemp -d /tmp/walrus-proofs.XXXXXX)}"

LOG_TAG=proof-bench
. "$ROOT/loadtest/bench-lib.sh"

[ -x "${GATEWAY_BIN:-}" ] || die "set GATEWAY_BIN to a walrus-gateway binary"
[ -x "${LOADTEST_BIN:-}" ] || die "set LOADTEST_BIN to a walrus-loadtest binary"
mkdir -p "$OUT"

MODEL="$ROOT/inference/tests/models/mlp.onnx"
INPUT="$OUT/input.json"
python3 - "$ROOT/inference/tests/models/mlp.json" > "$INPUT" <<'EOF'
import json, sys
case = json.load(open(sys.argv[1]))["cases"][0]
print(json.dumps({"inputs": case["inputs"], "proof": "store"}))
EOF

mode_args() {
    case "$1" in
        blob) echo "--proof-batch-max 0" ;;
        batch250) echo "--proof-batch-ms 250" ;;
        batch50) echo "--proof-batch-ms 50" ;;
        *) die "unknown mode $1" ;;
    esac
}

# The value of series $2 in the metrics file $1 (0 when absent).
metric() { python3 - "$1" "$2" <<'EOF'
import sys
for line in open(sys.argv[1]):
    name, _, value = line.rstrip().rpartition(" ")
    if name == sys.argv[2]:
        print(float(value)); break
else:
    print(0)
EOF
}

field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for conc in $CONCURRENCIES; do
        for mode in $MODES; do
            tag="$mode-c$conc-r$round"
            port="$(free_port)"
            # shellcheck disable=SC2046
            start_gateway "$port" "$OUT/$tag.out" "$OUT/$tag.log" --sim-shards "$SHARDS" \
                --max-concurrent-publishes 64 $(mode_args "$mode")
            model_id="$("$GATEWAY_BIN" put --gateway "http://127.0.0.1:$port" "$MODEL" | cut -d' ' -f1)"
            "${PIN_CLIENT[@]}" "$LOADTEST_BIN" --target "http://127.0.0.1:$port" --preset inference \
                --infer "$model_id" --input "$INPUT" --concurrency "$conc" --duration "$DURATION" \
                --warmup "$WARMUP" --timeout 30s --no-progress --json "$OUT/$tag.json" \
                > "$OUT/$tag.txt"
            curl -s "http://127.0.0.1:$port/metrics" > "$OUT/$tag.metrics"
            stop_pid "$GW_PID"
            m="$OUT/$tag.metrics"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$conc" "$round" \
                "$(field "$OUT/$tag.json" 'r["throughput_rps"]')" \
                "$(field "$OUT/$tag.json" 'r["latency_us"]["p50"]/1e3')" \
                "$(field "$OUT/$tag.json" 'r["latency_us"]["p99"]/1e3')" \
                "$(field "$OUT/$tag.json" 'r["errors"]')" \
                "$(metric "$m" 'gateway_publishes_total{outcome="stored"}')" \
                "$(metric "$m" gateway_published_bytes_total)" \
                "$(metric "$m" gateway_proof_quilts_published_total)" \
                "$(metric "$m" gateway_proof_quilt_patches_total)" \
                "$(metric "$m" gateway_proof_batch_proofs_count)" >> "$RESULTS"
            log "$tag: $(tail -1 "$RESULTS")"
        done
    done
done

# The full-queue burst: one fresh gateway per round, default batching.
BURSTS="$OUT/bursts.tsv"
: > "$BURSTS"
if [ "$BURST" -gt 0 ]; then
    for round in $(seq "$ROUNDS"); do
        tag="burst-r$round"
        port="$(free_port)"
        start_gateway "$port" "$OUT/$tag.out" "$OUT/$tag.log" --sim-shards "$SHARDS" \
            --max-concurrent-publishes 64
        model_id="$("$GATEWAY_BIN" put --gateway "http://127.0.0.1:$port" "$MODEL" | cut -d' ' -f1)"
        "${PIN_CLIENT[@]}" python3 - "http://127.0.0.1:$port/v1/inference/$model_id" \
            "$ROOT/inference/tests/models/mlp.json" "$BURST" "$BURST_CONC" > "$OUT/$tag.txt" <<'EOF'
import collections, concurrent.futures, json, sys, urllib.error, urllib.request
url, reference, count, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
inputs = json.load(open(reference))["cases"][0]["inputs"]

def one(i):
    body = json.loads(json.dumps(inputs))
    body["x"]["data"][0] += i / 8  # every request its own proof
    req = urllib.request.Request(url, json.dumps({"inputs": body, "proof": "store"}).encode(),
                                 {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

with concurrent.futures.ThreadPoolExecutor(conc) as pool:
    statuses = collections.Counter(pool.map(one, range(count)))
print(json.dumps(statuses))
EOF
        curl -s "http://127.0.0.1:$port/metrics" > "$OUT/$tag.metrics"
        stop_pid "$GW_PID"
        m="$OUT/$tag.metrics"
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$(cat "$OUT/$tag.txt")" \
            "$(metric "$m" gateway_proof_quilts_published_total)" \
            "$(metric "$m" gateway_proof_quilt_patches_total)" \
            "$(metric "$m" gateway_published_bytes_total)" >> "$BURSTS"
        log "$tag: $(tail -1 "$BURSTS")"
    done
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$SHARDS" "$(stat -c %s "$MODEL")" "$LOAD_BEFORE" "$LOAD_AFTER" "$(nproc)" \
    "$BURSTS" "$BURST" > "$OUT/summary.md" <<'EOF'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
n_run, model_size = int(sys.argv[2]), int(sys.argv[3])

def shape(n):
    f = (n - 1) // 3
    return n - 2 * f, n - f  # kp (rows), ks (columns)

def encoded(n, length):
    """SPEC §8: what Walrus stores for a blob of `length` bytes on n shards."""
    kp, ks = shape(n)
    ss = max(1, -(-int(length) // (kp * ks)))
    ss += ss % 2
    return n * (64 * n + 32) + n * (kp + ks) * ss

def quilt_len(n, patches, size):
    """QuiltV1 length of `patches` proofs of `size` bytes (64-hex identifiers, no tags):
    Walrus's symbol-size search over the index and the patches (codec::quilt)."""
    kp, ks = shape(n)
    index = 5 + 2 + patches * (2 + 1 + 64 + 1)
    sizes = [index] + [6 + 2 + 1 + 64 + size] * patches
    ss = max(-(-sum(sizes) // (ks * kp)), -(-index // (kp * 10)), 1)
    while sum(-(-s // (ss * kp)) for s in sizes) > ks:
        ss += 1
    ss += ss % 2
    return ss * kp * ks

by = {}
for mode, conc, rnd, rps, p50, p99, err, pubs, pbytes, quilts, patches, batches in rows:
    # Every run also published the model once.
    by.setdefault((mode, int(conc)), []).append(dict(
        rps=float(rps), p50=float(p50), p99=float(p99), err=int(float(err)),
        blobs=float(pubs) - 1, bytes=float(pbytes) - model_size,
        quilts=float(quilts), patches=float(patches)))

print("| mode | clients | req/s (median) | p50 ms | p99 ms | errors | blobs stored | proofs per blob | encoded bytes per proof, n = %d |" % n_run)
print("|---|---|---|---|---|---|---|---|---|")
proof_size = None
for (mode, conc), runs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    blobs = sum(r["blobs"] for r in runs)
    stored = sum(r["bytes"] for r in runs)
    proofs = blobs if mode == "blob" else sum(r["patches"] for r in runs)
    if mode == "blob" and blobs:
        proof_size = stored / blobs
    # From the mean blob length: the symbol size is linear in it but for rounding.
    enc = encoded(n_run, stored / blobs) * blobs / proofs if proofs else 0
    print("| %s | %d | %.0f | %.1f | %.1f | %d | %.0f | %.1f | %s |" % (
        mode, conc, statistics.median(r["rps"] for r in runs),
        statistics.median(r["p50"] for r in runs), statistics.median(r["p99"] for r in runs),
        sum(r["err"] for r in runs), blobs, proofs / blobs if blobs else 0, f"{enc:,.0f}"))
print()
if proof_size:
    print("Encoded bytes per proof by proofs per quilt, for a proof of %.0f bytes, computed from the encoding config:" % proof_size)
    print()
    print("| n | one blob per proof | 16 per quilt | 64 per quilt | 256 per quilt (or the most a quilt holds) |")
    print("|---|---|---|---|---|")
    for n in (n_run, 1000):
        kp, ks = shape(n)
        cells = [f"{encoded(n, proof_size):,.0f}"]
        for k in (16, 64, 256):
            k = min(k, ks - 1)
            cells.append(f"{encoded(n, quilt_len(n, k, int(proof_size))) / k:,.0f} ({k})")
        print("| %d | %s |" % (n, " | ".join(cells)))
bursts = [l.rstrip("\n").split("\t") for l in open(sys.argv[7]) if l.strip()]
if bursts:
    kp, ks = shape(n_run)
    print()
    print("Full queue: %s stored-proof requests with distinct inputs at once, default batching, n = %d:" % (sys.argv[8], n_run))
    print()
    print("| round | answers | quilts | proofs stored | proofs per quilt | encoded bytes per proof |")
    print("|---|---|---|---|---|---|")
    for rnd, answers, quilts, patches, pbytes in bursts:
        quilts, patches = float(quilts), float(patches)
        # Every run also published the model once.
        qbytes = float(pbytes) - model_size
        enc = quilts * n_run * (64 * n_run + 32) + n_run * (kp + ks) * qbytes / (kp * ks)
        print("| %s | %s | %.0f | %.0f | %.1f | %s |" % (
            rnd, ", ".join("%s × %s" % kv for kv in sorted(json.loads(answers).items())),
            quilts, patches, patches / quilts if quilts else 0,
            f"{enc / patches:,.0f}" if patches else "-"))
print()
print("Load average before / after: %s / %s. %s CPUs." % (sys.argv[4], sys.argv[5], sys.argv[6]))
EOF
cat "$OUT/summary.md"
log "reports in $OUT"
