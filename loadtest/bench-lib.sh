# Helpers shared by the comparison scripts (compare.sh, cache-compare.sh, restart-ready.sh).
# Source it after setting LOG_TAG; it sets up stopping every process registered with `track`
# (by PID, TERM then KILL) on exit.
# shellcheck shell=bash

LOG_TAG="${LOG_TAG:-bench}"
log() { echo "$LOG_TAG: $*" >&2; }
die() { log "$*"; exit 1; }

TRACKED_PIDS=()
POLICY_RC_CREATED=""
track() { TRACKED_PIDS+=("$1"); }

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid="$1"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local pid
    for pid in "${TRACKED_PIDS[@]}"; do stop_pid "$pid"; done
    if [ -n "$POLICY_RC_CREATED" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

command -v python3 >/dev/null || die "python3 is needed to read the reports"

SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
# Pin only when there are CPUs to pin to. Prefixes, not functions, so `cmd &` gives the
# server's own PID (taskset execs it) for the cleanup to stop.
PIN_SERVER=()
PIN_CLIENT=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt "$CLIENT_CPU" ] && [ "$(nproc)" -gt "$SERVER_CPU" ]; then
    PIN_SERVER=(taskset -c "$SERVER_CPU")
    PIN_CLIENT=(taskset -c "$CLIENT_CPU")
fi

# Install Debian packages (first name that installs wins for each "a|b" alternative) without
# letting them start their own daemons. Usage: apt_install nginx-light\|nginx wrk
APT_UPDATED=""
apt_install() {
    local want pkg ok
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    if [ -z "$APT_UPDATED" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
    for want in "$@"; do
        ok=""
        for pkg in ${want//|/ }; do
            log "installing $pkg from Debian"
            if apt-get install -y -qq "$pkg" >/dev/null 2>&1; then ok=1; break; fi
        done
        [ -n "$ok" ] || die "could not install any of: $want"
    done
    if [ -n "$POLICY_RC_CREATED" ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=""; fi
}

# The path of a program, installing its Debian package when missing.
need() { # program, package alternatives
    local path
    path="$(command -v "$1" || true)"
    [ -z "$path" ] && [ -x "/usr/sbin/$1" ] && path="/usr/sbin/$1"
    if [ -z "$path" ]; then
        apt_install "$2" >&2
        path="$(command -v "$1" || echo "/usr/sbin/$1")"
    fi
    [ -x "$path" ] || die "$1 is not installed and could not be installed"
    echo "$path"
}

bytes_of() { # 4KiB, 1MiB, 64MiB, 1234 -> bytes
    case "$1" in
        *KiB) echo $(( ${1%KiB} * 1024 )) ;;
        *MiB) echo $(( ${1%MiB} * 1024 * 1024 )) ;;
        *GiB) echo $(( ${1%GiB} * 1024 * 1024 * 1024 )) ;;
        *) echo "$1" ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port, what
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$2 did not start listening on port $1"
}

cpu_mask() { python3 -c "print(format(1 << $1, 'b'))"; }

# Build (or take from GATEWAY_BIN / LOADTEST_BIN / SIM_BIN) the release binaries.
# Sets GATEWAY_BIN, LOADTEST_BIN and SIM_BIN.
build_binaries() { # root, profile
    local root="$1" profile="$2" dir
    if [ -z "${GATEWAY_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
        log "building walrus-gateway, walrus-loadtest and walrus-sim ($profile)"
        (cd "$root" && nice cargo build --profile "$profile" -p walrus-gateway -p walrus-loadtest -p walrus-storage-sim --bins)
        dir="${CARGO_TARGET_DIR:-$root/target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
        GATEWAY_BIN="${GATEWAY_BIN:-$dir/walrus-gateway}"
        LOADTEST_BIN="${LOADTEST_BIN:-$dir/walrus-loadtest}"
        SIM_BIN="${SIM_BIN:-$dir/walrus-sim}"
    fi
    [ -x "$GATEWAY_BIN" ] || die "no gateway binary at $GATEWAY_BIN"
    [ -x "$LOADTEST_BIN" ] || die "no loadtest binary at $LOADTEST_BIN"
}

# Build (or take from GATEWAY_BIN / SIM_BIN) the gateway and walrus-sim, for benchmarks that
# drive the gateway with curl and need no load generator. Sets GATEWAY_BIN and SIM_BIN.
build_gateway_and_sim() { # root, profile
    local root="$1" profile="$2" dir
    if [ -z "${GATEWAY_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
        log "building walrus-gateway and walrus-sim ($profile)"
        (cd "$root" && nice cargo build --profile "$profile" -p walrus-gateway -p walrus-storage-sim --bins)
        dir="${CARGO_TARGET_DIR:-$root/target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
        GATEWAY_BIN="${GATEWAY_BIN:-$dir/walrus-gateway}"
        SIM_BIN="${SIM_BIN:-$dir/walrus-sim}"
    fi
    [ -x "$GATEWAY_BIN" ] || die "no gateway binary at $GATEWAY_BIN"
    [ -x "$SIM_BIN" ] || die "no walrus-sim binary at $SIM_BIN"
}

# The value of one series on the gateway at $BASE (curl at $CURL), as an integer; 0 if absent.
gateway_metric() { # series -> value or 0
    "$CURL" -sS "$BASE/metrics" | python3 -c '
import sys
want = sys.argv[1]
for line in sys.stdin:
    if line.startswith(want + " "):
        print(int(float(line.split()[-1]))); break
else:
    print(0)' "$1"
}

# Start `walrus-gateway serve` on CPU $SERVER_CPU; extra arguments follow `serve`. Waits until
# it prints "listening on" into $out and its port accepts. Sets GW_PID.
start_gateway() { # port, out file, log file, serve args...
    local port="$1" out="$2" errlog="$3"
    shift 3
    # Without --cache-dir, a gateway that has a default disk tier (~/.cache/walrus-gateway) is
    # told to run without one: benchmarks compare what they name, write nothing into the home
    # directory, and two gateways started side by side are alike (the second would otherwise
    # find the default directory locked and run memory-only).
    if [[ " $* " != *" --cache-dir "* ]] && "$GATEWAY_BIN" serve --help 2>/dev/null | grep -q -- --no-disk-cache; then
        set -- "$@" --no-disk-cache
    fi
    RUST_LOG="${GATEWAY_RUST_LOG:-warn}" "${PIN_SERVER[@]}" "$GATEWAY_BIN" serve --bind "127.0.0.1:$port" "$@" \
        > "$out" 2> "$errlog" &
    GW_PID=$!
    track "$GW_PID"
    for _ in $(seq 1200); do
        grep -q '^listening on' "$out" 2>/dev/null && break
        kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited: $(tail -3 "$errlog")"
        sleep 0.1
    done
    wait_port "$port" "walrus-gateway"
}

start_sim() { # shards, committee file, log dir: walrus-sim with 4 nodes, pinned like the client; sets SIM_PID
    log "starting walrus-sim ($1 shards, 4 nodes)"
    "${PIN_CLIENT[@]}" "$SIM_BIN" --n-shards "$1" --nodes 4 --committee-out "$2" \
        > "$3/sim.out" 2> "$3/sim.log" &
    SIM_PID=$!
    track "$SIM_PID"
    for _ in $(seq 600); do
        [ -s "$2" ] && break
        kill -0 "$SIM_PID" 2>/dev/null || die "walrus-sim exited: $(tail -3 "$3/sim.log")"
        sleep 0.1
    done
    [ -s "$2" ] || die "walrus-sim wrote no committee file"
}

median() { # numbers... -> median (mean of the middle two for an even count)
    python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v) if v else 0)' "$@"
}

# Random blobs, PER_SIZE of each size, as DIR/<size>-<i>.bin; sets the array `seeds` to the
# gateway arguments that seed them (`--seed FILE` pairs).
make_seed_blobs() { # dir, sizes, per_size
    local dir="$1" size n i f
    seeds=()
    mkdir -p "$dir"
    for size in $2; do
        n="$(bytes_of "$size")"
        for i in $(seq "$3"); do
            f="$dir/$size-$i.bin"
            head -c "$n" /dev/urandom > "$f"
            seeds+=(--seed "$f")
        done
    done
}
