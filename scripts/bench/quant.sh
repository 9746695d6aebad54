#!/usr/bin/env bash
# Quantization of the real Gemma 3 270M (f32 checkpoint from the GGUF import as the baseline):
# WikiText-2 test perplexity of f32 / bf16 / q8bf16 / q4bf16 rtn, awq, gptq, awq+gptq and
# within a size budget (--size-budget, default the Q4_K_M GGUF's size) (calibration on
# valid.txt only), and quantization throughput and peak memory (next to llama-quantize to Q4_0
# when llama.cpp is built). Speed is the runtime sections' (gemma-runtime.sh, tvm.sh). Draws
# docs/img/bench-quant.svg (perplexity against size) from the table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
CHUNKS=${QUANT_PPL_CHUNKS:-8}        # 512-token windows per perplexity run (~12 s each here)
CALIB_SAMPLES=${QUANT_CALIB_SAMPLES:-16}
WIKI="${WIKITEXT_DIR:-$REPO/../shared/datasets/wikitext-2}"
BASE="$MODELS/gemma3-270m-f32"
GGUF="$MODELS/gemma-3-270m-q4_k_m.gguf"
LLAMA="$PEERS/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"
WORK="$REPO/.cache/bench/quant"
rm -rf "$WORK" && mkdir -p "$WORK"
[ -x "$ALC" ] || { echo "quant: build first (cargo build --release --bins)"; exit 1; }
[ -d "$BASE" ] || { echo "quant: $BASE missing (make real-models)"; exit 1; }

rows="$WORK/rows.md"; : > "$rows"
quantize() { # quantize LABEL ARGS...: writes $WORK/LABEL, a table row of speed and memory
  local label=$1; shift
  local rss
  /usr/bin/time -o "$WORK/rss-$label" -f '%M' "$ALC" -q --json quantize "$BASE" -o "$WORK/$label" "$@" \
    > "$WORK/q-$label.json"
  rss=$(tail -1 "$WORK/rss-$label")
  printf '| ours `%s` | %s | %.1f | %.2f | %.1f | %d |\n' "${*//$WIKI\//}" "$label" \
    "$(json_field "$WORK/q-$label.json" quantize_seconds)" \
    "$(json_field "$WORK/q-$label.json" input_gb_per_s)" \
    "$(json_field "$WORK/q-$label.json" calibration_seconds)" "$((rss / 1024))" >> "$rows"
}
quantize bf16 --quant bf16
quantize q8bf16 --quant q8bf16
quantize q4bf16-rtn --quant q4bf16 --method rtn
CAL=(--calib "$WIKI/valid.txt" --calib-samples "$CALIB_SAMPLES")
quantize q4bf16-awq --quant q4bf16 --method awq "${CAL[@]}"
quantize q4bf16-gptq --quant q4bf16 --method gptq "${CAL[@]}"
quantize q4bf16-awq-gptq --quant q4bf16 --method awq-gptq "${CAL[@]}"
# Mixed precision within the published Q4_K_M GGUF's size (default method).
quantize q4bf16-budget --quant q4bf16 --size-budget "${QUANT_SIZE_BUDGET:-253113024}" "${CAL[@]}"
if [ -x "$LLAMA/llama-quantize" ] && [ -f "$GGUF" ]; then
  start=$(date +%s.%N)
  /usr/bin/time -o "$WORK/rss-llama" -f '%M' "$LLAMA/llama-quantize" --allow-requantize "$GGUF" \
    "$WORK/q4_0.gguf" Q4_0 "$(nproc)" > "$WORK/llama-quantize.log" 2>&1
  rss=$(tail -1 "$WORK/rss-llama")
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  printf '| llama-quantize Q4_0 (from the Q4_K_M GGUF, %d MB) | q4_0 | %.1f | %.2f | - | %d |\n' \
    "$(( $(stat -c %s "$GGUF") / 1000000 ))" "$secs" \
    "$(echo "$(stat -c %s "$GGUF") / $secs / 1000000000" | bc -l)" "$((rss / 1024))" >> "$rows"
else
  echo '| llama-quantize | not built here | - | - | - | - |' >> "$rows"
fi

ppl="$WORK/ppl.md"; : > "$ppl"
for label in f32 bf16 q8bf16 q4bf16-rtn q4bf16-awq q4bf16-gptq q4bf16-awq-gptq q4bf16-budget; do
  dir="$WORK/$label"; [ "$label" = f32 ] && dir="$BASE"
  "$ALC" --json perplexity "$dir" --text "$WIKI/test.txt" --ctx 512 --stride 512 \
    --max-chunks "$CHUNKS" > "$WORK/ppl-$label.json"
  size=$(du -b "$dir/model.safetensors" | cut -f1)
  printf '| %s | %.3f | %d | %d |\n' "$label" "$(json_field "$WORK/ppl-$label.json" perplexity)" \
    "$(json_field "$WORK/ppl-$label.json" scored_tokens)" "$((size / 1048576))" >> "$ppl"
done

body="$WORK/section.md"
{
  echo "## Quantization of Gemma 3 270M (\`quant\`)"
  echo
  echo "$(machine_line). WikiText-2 test, ctx 512, stride 512, first $CHUNKS windows (second half"
  echo "of each window scored, as llama-perplexity); calibrated methods on $CALIB_SAMPLES x 512 tokens of valid.txt;"
  echo "q4bf16-budget: \`--size-budget ${QUANT_SIZE_BUDGET:-253113024}\` (awq+gptq, most sensitive projections at q8bf16)."
  echo "Group 128; q4bf16 keeps the tied embedding at q8bf16 (policy \`embed=q8bf16,proj=q4bf16,norm=f32\`)."
  echo
  echo "| model | perplexity | scored tokens | model.safetensors MiB |"
  echo "|---|---|---|---|"
  cat "$ppl"
  echo
  echo "| quantizer | output | seconds (weights) | input GB/s | calibration + search s | peak RSS MiB |"
  echo "|---|---|---|---|---|---|"
  cat "$rows"
  echo
  echo "Peak RSS includes the mapped input checkpoint pages (1.07 GB, file-backed); AWQ's also the"
  echo "model loaded for calibration."
  echo
  echo "Speed is measured once, in the runtime sections: native f32 and bf16 next to llama.cpp in"
  echo "[\`gemma-runtime\`](#gemma-3-270m-on-the-native-backend-gemma-runtime), q4bf16 on both backends in"
  echo "[\`tvm\`](#the-tvm-backend-tvm)."
} > "$body"
write_section quant "$body"
cat "$body"
draw_chart scatter quant 1 model "model.safetensors MiB" perplexity \
  "Gemma 3 270M: WikiText-2 perplexity against weight size" bench-quant.svg
