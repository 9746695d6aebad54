#!/usr/bin/env bash
# Single-utterance latency of the INT8 mALBERT classifier (albert-clinc, CLINC150 test
# utterances, one at a time, batch 1, no padding): ava-runtime's encoder (`aon eval`) on its
# native kernels and on the archive's TVM kernels (`--target linux-x86_64`), next to onnxruntime
# on the same INT8 ONNX file and the same token ids (tests/scripts/ort_predict.py).
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
