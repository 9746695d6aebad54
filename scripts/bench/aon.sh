#!/usr/bin/env bash
# Single-utterance latency of the INT8 mALBERT classifier (albert-clinc, CLINC150 test
# utterances, one at a time, batch 1, no padding): ava-runtime's encoder (`aon eval`) on its
# native kernels and on the archive's TVM kernels (`--target linux-x86_64`), next to onnxruntime
# on the same INT8 ONNX file and the same token ids (tests/scripts/ort_predict.py). Draws
# docs/img/bench-aon.svg from the table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
UTTERANCES=${UTTERANCES:-1000}
WORK="$REPO/.cache/bench/aon"
mkdir -p "$WORK"
CLINC="$REPO/fixtures/gen/data/clinc150.json"
PY="$REPO/.venv/bin/python"

[ -x "$AON" ] || cargo build --release --bins
[ -x "$PY" ] || make setup
rm -rf "$WORK/archive" && mkdir -p "$WORK/archive"
"$AON" -q compile fixtures/models/albert-clinc --intents "$CLINC" --keep-head --target linux-x86_64 \
  -o "$WORK/archive" > /dev/null
archive=$(ls "$WORK"/archive/*.tar)
rm -rf "$WORK/unpacked" && "$AON" -q unpack "$archive" -o "$WORK/unpacked" > /dev/null
"$AON" --json eval "$archive" --backend native --data "$CLINC" --limit "$UTTERANCES" \
  --predictions "$WORK/pred.json" > "$WORK/ours.json"
"$AON" --json eval "$archive" --backend tvm --data "$CLINC" --limit "$UTTERANCES" \
  --predictions "$WORK/pred-tvm.json" > "$WORK/ours-tvm.json"
AVA_NUM_THREADS=1 "$AON" --json eval "$archive" --backend tvm --data "$CLINC" --limit "$UTTERANCES" \
  > "$WORK/ours-tvm-1.json"
tvm_agreement=$("$PY" -c 'import json, sys
a, b = (json.load(open(f))["predicted"] for f in sys.argv[1:])
print(100 * sum(x == y for x, y in zip(a, b)) / len(a))' "$WORK/pred.json" "$WORK/pred-tvm.json")
ort() { # ort THREADS
  "$PY" tests/scripts/ort_predict.py "$WORK/unpacked/model.onnx" "$WORK/pred.json" --bench "$UTTERANCES" --threads "$1" > "$WORK/ort-$1.json"
}
ort 1
ort "$(nproc)"

table=$(mktemp)
{
  echo "albert-clinc INT8 (QDQ, \`aon compile --keep-head --target linux-x86_64\`), $UTTERANCES CLINC150 test utterances one at a time;"
  echo "model time only (token ids in, logits out; our tokenizer adds the difference to the second row)."
  echo "Machine: $(machine_line). Script: \`scripts/bench/aon.sh\`."
  echo
  echo "| engine | threads | p50 ms | p95 ms | accuracy | agreement with ours |"
  echo "|---|---|---|---|---|---|"
  printf '| ours, ava-runtime native kernels | 1 | %.2f | %.2f | %.2f%% | - |\n' \
    "$(json_field "$WORK/ours.json" model_latency_p50_ms)" "$(json_field "$WORK/ours.json" model_latency_p95_ms)" \
    "$(echo "$(json_field "$WORK/ours.json" accuracy) * 100" | bc -l)"
  for t in 1 "$(nproc)"; do
    f="$WORK/ours-tvm.json"; [ "$t" = 1 ] && f="$WORK/ours-tvm-1.json"
    printf '| ours, ava-runtime TVM kernels (int8 x int8) | %s | %.2f | %.2f | %.2f%% | %.2f%% |\n' "$t" \
      "$(json_field "$f" model_latency_p50_ms)" "$(json_field "$f" model_latency_p95_ms)" \
      "$(echo "$(json_field "$f" accuracy) * 100" | bc -l)" "$tvm_agreement"
  done
  printf '| ours, incl. tokenizer | 1 | %.2f | %.2f | | |\n' \
    "$(json_field "$WORK/ours.json" latency_p50_ms)" "$(json_field "$WORK/ours.json" latency_p95_ms)"
  for t in 1 "$(nproc)"; do
    f="$WORK/ort-$t.json"
    printf '| onnxruntime %s | %s | %.2f | %.2f | %.2f%% | %.2f%% |\n' "$(json_field "$f" onnxruntime)" "$t" \
      "$(json_field "$f" latency_p50_ms)" "$(json_field "$f" latency_p95_ms)" \
      "$(echo "$(json_field "$f" onnxruntime_accuracy) * 100" | bc -l)" \
      "$(echo "$(json_field "$f" agreement) * 100" | bc -l)"
  done
} > "$table"
cat "$table"
write_section aon "$table"
draw_chart bars aon 1 "engine,threads" "p50 ms,p95 ms" \
  "albert-clinc INT8, ms per utterance: ours and onnxruntime" bench-aon.svg

# Per-utterance latency by sequence length, ours against onnxruntime's configurations, on the
# bundled encoder and on an albert-base-v2-sized one (random weights from
# fixtures/gen/make_albert_base.py, head fitted on a few CLINC150 intents). Inputs of exactly
# L tokens (scripts/bench/aon_lengths.py). Ours: `aon eval`, tokenizer included (p50 / p95).
# onnxruntime (model only, same token ids): fp32 on `aon optimize --passes ort` (fused
# attention), dynamic INT8 of the `standard`-optimized float model (quantize_dynamic, per
# channel: every linear layer; onnxruntime fuses attention when it loads it), and static QDQ (the
# archive's own model.onnx).
LENGTHS=${LENGTHS:-"16 32 64 128"}
LEN_UTTERANCES=${LEN_UTTERANCES:-200}
BASE_UTTERANCES=${BASE_UTTERANCES:-40}
LENS="$REPO/scripts/bench/aon_lengths.py"

# lengths_model NAME DIR N: DIR holds the archive (*.tar) and the compile cache (cache/).
lengths_model() {
  local name=$1 dir=$2 n=$3 archive export L b t m
  archive=$(ls "$dir"/*.tar)
  rm -rf "$dir/unpacked" && "$AON" -q unpack "$archive" -o "$dir/unpacked" > /dev/null
  export=$(ls "$dir"/cache/aon-compile/export/*/model.onnx | head -1)
  "$AON" -q optimize "$export" --passes ort -o "$dir/ort-fp32.onnx" > /dev/null
  "$PY" "$LENS" dynamic "$(ls "$dir"/cache/aon-compile/optimize/*/model.onnx | head -1)" \
    "$dir/ort-dynamic.onnx"
  cp "$dir/unpacked/model.onnx" "$dir/ort-qdq.onnx"
  "$PY" "$LENS" words "$CLINC" "$dir/unpacked/labels.json" "$n" "$dir/words.json"
  "$AON" -q --json eval "$archive" --data "$dir/words.json" --split test \
    --predictions "$dir/words-pred.json" > /dev/null
  for L in $LENGTHS; do
    "$PY" "$LENS" texts "$CLINC" "$dir/unpacked/labels.json" "$dir/words-pred.json" "$dir/words.json" \
      "$L" "$n" "$dir/texts-$L.json"
    for b in native tvm; do for t in 1 2; do
      AVA_NUM_THREADS=$t "$AON" --json eval "$archive" --backend "$b" --data "$dir/texts-$L.json" \
        --split test --limit "$n" --predictions "$dir/pred-$L.json" > "$dir/ours-$b-$t-$L.json"
    done; done
    for m in fp32 dynamic qdq; do for t in 1 2; do
      "$PY" tests/scripts/ort_predict.py "$dir/ort-$m.onnx" "$dir/pred-$L.json" --bench "$n" \
        --threads "$t" --min-agreement 0 > "$dir/ort-$m-$t-$L.json"
    done; done
  done
  local cell row
  cell() { printf '%.2f / %.2f' "$(json_field "$1" "$2_p50_ms")" "$(json_field "$1" "$2_p95_ms")"; }
  for b in native tvm; do for t in 1 2; do
    row="| $name | ours, $b kernels, incl. tokenizer | $t |"
    for L in $LENGTHS; do row="$row $(cell "$dir/ours-$b-$t-$L.json" latency) |"; done
    echo "$row"
  done; done
  for m in fp32 dynamic qdq; do for t in 1 2; do
    row="| $name | onnxruntime $m | $t |"
    for L in $LENGTHS; do row="$row $(cell "$dir/ort-$m-$t-$L.json" latency) |"; done
    echo "$row"
  done; done
}

CLINC_DIR="$WORK/lengths-clinc"
rm -rf "$CLINC_DIR" && mkdir -p "$CLINC_DIR"
"$AON" -q --cache-dir "$CLINC_DIR/cache" compile fixtures/models/albert-clinc --intents "$CLINC" \
  --keep-head --target linux-x86_64 -o "$CLINC_DIR" > /dev/null
BASE_DIR="$WORK/lengths-base"
rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR"
"$PY" fixtures/gen/make_albert_base.py --out "$BASE_DIR/model" > /dev/null
"$PY" -c 'import json, sys
d = json.load(open(sys.argv[1])); keep = {"alarm", "balance", "timer", "weather"}
json.dump({s: [r for r in d[s] if r[1] in keep] for s in ("train", "val", "test")}, open(sys.argv[2], "w"))' \
  "$CLINC" "$BASE_DIR/intents.json"
"$AON" -q --cache-dir "$BASE_DIR/cache" compile "$BASE_DIR/model" --intents "$BASE_DIR/intents.json" \
  --samples 64 --val-samples 100 --target linux-x86_64 -o "$BASE_DIR" > /dev/null

lengths=$(mktemp)
{
  echo "Per-utterance latency p50 / p95 in ms by input length (tokens, [CLS] and [SEP] included), batch 1,"
  echo "$LEN_UTTERANCES inputs for albert-clinc (hidden 256, 4 layers) and $BASE_UTTERANCES for the"
  echo "albert-base-v2-sized model (hidden 768, 12 layers, random weights): CLINC150 test utterances'"
  echo "words repeated to the length. Ours: INT8 archive (\`aon compile --target linux-x86_64\`),"
  echo "tokenizer included; onnxruntime: model only, same token ids; fp32 on \`aon optimize --passes ort\`,"
  echo "dynamic INT8 = quantize_dynamic of the \`standard\`-optimized float model, static QDQ = the archive's model.onnx."
  echo "Machine: $(machine_line). Script: \`scripts/bench/aon.sh\`."
  echo
  header="| model | engine | threads |"; rule="|---|---|---|"
  for L in $LENGTHS; do header="$header $L |"; rule="$rule---|"; done
  echo "$header"; echo "$rule"
  lengths_model albert-clinc "$CLINC_DIR" "$LEN_UTTERANCES"
  lengths_model albert-base-sized "$BASE_DIR" "$BASE_UTTERANCES"
} > "$lengths"
cat "$lengths"
write_section aon-lengths "$lengths"
