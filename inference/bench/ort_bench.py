#!/usr/bin/env python3
"""onnxruntime's latency on the inference benchmark's models and inputs, for context beside the
gateway and tract figures.

    python3 inference/bench/ort_bench.py [--dir DIR] [--runs N] [--warmup W] [--json FILE] [NAME ...]

DIR (default <repo>/target/bench-models) is what fetch-models.sh wrote: NAME.onnx and NAME.json
(a gateway request body). For each model (all in DIR, or the NAMEs given) it times N warm runs
of `session.run` (after W untimed ones) on the request's inputs, in two sessions: one
intra-op thread (tract runs a plan on one thread, so this is the like-for-like figure) and
onnxruntime's default (one thread per core). Graph optimisations are onnxruntime's default
(all). It prints the median and p90 per model and, with --json, writes them as

    {"onnxruntime": "<version>", "models": {"NAME": {"threads1": {"p50_ms": .., "p90_ms": ..},
                                                     "default": {...}}}}

which `cargo run --release -p walrus-gateway --example inferbench` prints beside its figures
when it finds DIR/ort.json. Needs `pip install onnxruntime numpy`.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

DTYPES = {
    "f32": np.float32,
    "f64": np.float64,
    "i64": np.int64,
    "i32": np.int32,
    "u8": np.uint8,
    "bool": np.bool_,
}


def load_inputs(path, session):
    with open(path) as f:
        body = json.load(f)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        sys.exit(f"{path}: no \"inputs\" object")
    names = [i.name for i in session.get_inputs()]
    if "shape" in inputs:  # the unnamed single-input form
        if len(names) != 1:
            sys.exit(f"{path}: unnamed input but the model has inputs {names}")
        inputs = {names[0]: inputs}
    feeds = {}
    for name, tensor in inputs.items():
        if name not in names:
            sys.exit(f"{path}: the model has no input {name!r} (inputs: {names})")
        dtype = DTYPES.get(tensor["dtype"])
        if dtype is None:
            sys.exit(f"{path}: input {name!r}: unknown dtype {tensor['dtype']!r}")
        data = [float("nan") if v is None else v for v in tensor["data"]]
        feeds[name] = np.asarray(data, dtype=dtype).reshape(tensor["shape"])
    return feeds


def percentile(sorted_ms, q):
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def time_session(model, feeds, threads, runs, warmup):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": percentile(times, 0.9), "runs": runs}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=os.path.join(repo, "target", "bench-models"))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this file (e.g. DIR/ort.json)")
    parser.add_argument("names", nargs="*", help="models to run (default: every NAME.onnx in DIR)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        sys.exit("--runs must be >= 1 and --warmup >= 0")

    names = args.names or sorted(
        f[: -len(".onnx")] for f in os.listdir(args.dir) if f.endswith(".onnx")
    )
    if not names:
        sys.exit(f"no models in {args.dir}: run inference/bench/fetch-models.sh first")
    print(f"onnxruntime {ort.__version__}, {args.runs} timed runs after {args.warmup} warm-up")
    results = {}
    for name in names:
        model = os.path.join(args.dir, f"{name}.onnx")
        probe = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        feeds = load_inputs(os.path.join(args.dir, f"{name}.json"), probe)
        del probe
        one = time_session(model, feeds, 1, args.runs, args.warmup)
        default = time_session(model, feeds, 0, args.runs, args.warmup)
        results[name] = {"threads1": one, "default": default}
        print(
            f"{name:10} 1 thread p50 {one['p50_ms']:8.3f} ms  p90 {one['p90_ms']:8.3f} ms   "
            f"default p50 {default['p50_ms']:8.3f} ms  p90 {default['p90_ms']:8.3f} ms"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "models": results}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
