#!/usr/bin/env bash
# Prefill and decode speed and peak memory of the real Gemma 3 270M on the native backend
# (f32 and bf16 archives, weights used in place), next to llama.cpp on the same weights
# (its F32/F16 GGUFs are re-quantized from the same Q4_K_M file our checkpoints come from).
# Draws docs/img/bench-gemma-runtime.svg from the table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
GEN_TOKENS=${GEN_TOKENS:-64}
REPS=${REPS:-3}
WORK="$REPO/.cache/bench"
mkdir -p "$WORK"

# A fixed prompt of PROMPT_TOKENS ids: BOS, then ordinary vocabulary ids (llama-bench also
# uses arbitrary tokens; only the count matters for speed).
ids="2"
for i in $(seq 1 $((PROMPT_TOKENS - 1))); do ids="$ids,$((1000 + (i * 7919) % 20000))"; done

ours() { # ours LABEL ARCHIVE
  local label=$1 archive=$2 out prefill=() decode=() rss=()
  for r in $(seq 1 "$REPS"); do
    out="$WORK/run-$label-$r.json"
    "$ALC" --json run "$archive" --prompt-ids "$ids" --max-tokens "$GEN_TOKENS" --ignore-eos > "$out"
    prefill+=("$(json_field "$out" prefill_tok_s)")
    decode+=("$(json_field "$out" decode_tok_s)")
    rss+=("$(json_field "$out" peak_rss_bytes)")
  done
  printf '| ours, native | %s | %.1f | %.1f | %d |\n' "$label" \
    "$(printf '%s\n' "${prefill[@]}" | median)" "$(printf '%s\n' "${decode[@]}" | median)" \
    "$(( $(printf '%s\n' "${rss[@]}" | median | cut -d. -f1) / 1048576 ))"
}

peer() { # peer LABEL GGUF
  local label=$1 gguf=$2 csv="$WORK/llama-$1.csv" rss
  rss=$( { /usr/bin/time -f '%M' "$LLAMA/llama-bench" -m "$gguf" -p "$PROMPT_TOKENS" -n "$GEN_TOKENS" \
      -t "$(nproc)" -r "$REPS" -o csv > "$csv"; } 2>&1 | tail -1)
  # avg_ts column: first row prompt processing, second row generation.
  local col pp tg
  col=$(head -1 "$csv" | tr ',' '\n' | grep -n '^"\?avg_ts"\?$' | cut -d: -f1)
  pp=$(sed -n 2p "$csv" | cut -d, -f"$col" | tr -d '"')
  tg=$(sed -n 3p "$csv" | cut -d, -f"$col" | tr -d '"')
  printf '| llama.cpp (%s) | %s | %.1f | %.1f | %d |\n' "$LLAMA_VERSION" "$label" "$pp" "$tg" "$((rss / 1024))"
}

[ -x "$ALC" ] || cargo build --release --bins
[ -d "$MODELS/gemma3-270m-f32" ] || make real-models
LLAMA=$("$REPO/scripts/build-llama-cpp" | tail -1)
LLAMA_VERSION=$(echo "$LLAMA" | grep -o 'llama_cpp_python-[0-9.]*' | sed 's/^llama_cpp_python-/vendored in llama-cpp-python /')
for dtype in f32 bf16; do
  archive="$WORK/gemma3-270m-$dtype.tar"
  [ -f "$archive" ] || "$ALC" -q package "$MODELS/gemma3-270m-$dtype" -o "$archive" > /dev/null
done
q4km="$MODELS/gemma-3-270m-q4_k_m.gguf"
for t in F32 F16 Q4_0; do
  gguf="$WORK/gemma-3-270m-$t.gguf"
  [ -f "$gguf" ] || "$LLAMA/llama-quantize" --allow-requantize "$q4km" "$gguf" "$t" > /dev/null 2>&1
done

table=$(mktemp)
{
  echo "Real Gemma 3 270M, prompt $PROMPT_TOKENS tokens, $GEN_TOKENS generated, median of $REPS runs,"
  echo "$(nproc) threads each. Machine: $(machine_line). Script: \`scripts/bench/gemma-runtime.sh\`."
  echo
  echo "| engine | weights | prefill tok/s | decode tok/s | peak RSS MiB |"
  echo "|---|---|---|---|---|"
  ours f32 "$WORK/gemma3-270m-f32.tar"
  ours bf16 "$WORK/gemma3-270m-bf16.tar"
  peer F32 "$WORK/gemma-3-270m-F32.gguf"
  peer F16 "$WORK/gemma-3-270m-F16.gguf"
  peer Q4_0 "$WORK/gemma-3-270m-Q4_0.gguf"
  peer Q4_K_M "$q4km"
} > "$table"
cat "$table"
write_section gemma-runtime "$table"
draw_chart bars gemma-runtime 1 "engine,weights" "prefill tok/s,decode tok/s" \
  "Gemma 3 270M, tokens/s: ours (native) and llama.cpp" bench-gemma-runtime.svg
