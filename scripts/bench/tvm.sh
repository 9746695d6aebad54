#!/usr/bin/env bash
# The TVM kernel libraries of the real Gemma 3 270M: compile time per target (`alc build`, no
# kernel cache) for f32, bf16 and q4bf16 weights, and prefill/decode speed of the `tvm` backend
# next to the `native` one on this machine (linux-x86_64), with llama.cpp's Q4_0 beside them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
GEN_TOKENS=${GEN_TOKENS:-64}
REPS=${REPS:-3}
TARGETS=${TARGETS:-"linux-x86_64 linux-arm64 android-arm64"}
WORK="$REPO/.cache/bench/tvm"
mkdir -p "$WORK"
unset AVA_KERNEL_CACHE

ids="2"
for i in $(seq 1 $((PROMPT_TOKENS - 1))); do ids="$ids,$((1000 + (i * 7919) % 20000))"; done

checkpoint() { # checkpoint WEIGHTS: the 270M checkpoint directory in WEIGHTS
  case $1 in
    q4bf16)
      [ -d "$WORK/gemma3-270m-q4bf16" ] ||
        "$ALC" -q quantize "$MODELS/gemma3-270m-f32" --quant q4bf16 -o "$WORK/gemma3-270m-q4bf16" > /dev/null
      echo "$WORK/gemma3-270m-q4bf16" ;;
    *) echo "$MODELS/gemma3-270m-$1" ;;
  esac
}

compile_row() { # compile_row WEIGHTS: seconds per target of `alc build`
  local w=$1 row="| $1 |" out secs
  for t in $TARGETS; do
    out="$WORK/build-$w-$t.json"
    "$ALC" --json build "$(checkpoint "$w")" --target "$t" -o "$WORK/built-$w-$t" > "$out"
    secs=$(json_field "$out" seconds)
    row="$row $(printf '%.1f' "$secs") |"
  done
  echo "$row"
}

speed_row() { # speed_row WEIGHTS BACKEND: median prefill/decode tok/s of `alc run`
  local w=$1 backend=$2 archive="$WORK/gemma3-270m-$1-linux-x86_64.tar" out prefill=() decode=()
  [ -f "$archive" ] || "$ALC" -q package "$WORK/built-$w-linux-x86_64" -o "$archive" > /dev/null
  for r in $(seq 1 "$REPS"); do
    out="$WORK/run-$w-$backend-$r.json"
    "$ALC" --json run "$archive" --backend "$backend" --prompt-ids "$ids" \
      --max-tokens "$GEN_TOKENS" --ignore-eos > "$out"
    prefill+=("$(json_field "$out" prefill_tok_s)")
    decode+=("$(json_field "$out" decode_tok_s)")
  done
  printf '| ours, %s | %s | %.1f | %.1f |\n' "$backend" "$w" \
    "$(printf '%s\n' "${prefill[@]}" | median)" "$(printf '%s\n' "${decode[@]}" | median)"
}

peer_row() { # peer_row LABEL GGUF: llama-bench on the same prompt/generation lengths
  local csv="$WORK/llama-$1.csv" col pp tg
  "$LLAMA/llama-bench" -m "$2" -p "$PROMPT_TOKENS" -n "$GEN_TOKENS" -t "$(nproc)" -r "$REPS" \
    -o csv > "$csv" 2> /dev/null
  col=$(head -1 "$csv" | tr ',' '\n' | grep -n '^"\?avg_ts"\?$' | cut -d: -f1)
  pp=$(sed -n 2p "$csv" | cut -d, -f"$col" | tr -d '"')
  tg=$(sed -n 3p "$csv" | cut -d, -f"$col" | tr -d '"')
  printf '| llama.cpp | %s | %.1f | %.1f |\n' "$1" "$pp" "$tg"
}

[ -x "$ALC" ] || cargo build --release --bins
[ -d "$MODELS/gemma3-270m-f32" ] || make real-models
LLAMA=$("$REPO/scripts/build-llama-cpp" | tail -1)
q40="$REPO/.cache/bench/gemma-3-270m-Q4_0.gguf"
[ -f "$q40" ] || "$LLAMA/llama-quantize" --allow-requantize "$MODELS/gemma-3-270m-q4_k_m.gguf" \
  "$q40" Q4_0 > /dev/null 2>&1
rm -f "$WORK"/*.tar

table=$(mktemp)
{
  echo "Real Gemma 3 270M. Compile: seconds of \`alc build\` per target (TVM $(
    .venv/bin/python -c 'import tvm; print(tvm.__version__)' 2>/dev/null || echo '?'), no kernel cache)."
  echo "Speed: prompt $PROMPT_TOKENS tokens, $GEN_TOKENS generated, median of $REPS runs, $(nproc) threads,"
  echo "linux-x86_64 kernels. Machine: $(machine_line); other processes kept it $(cpu_busy) busy just"
  echo "before the runs. Script: \`scripts/bench/tvm.sh\`."
  echo
  echo "| weights |$(for t in $TARGETS; do printf ' %s s |' "$t"; done)"
  echo "|---|$(for _ in $TARGETS; do printf -- '---|'; done)"
  for w in f32 bf16 q4bf16; do compile_row "$w"; done
  echo
  echo "| engine | weights | prefill tok/s | decode tok/s |"
  echo "|---|---|---|---|"
  for w in f32 bf16 q4bf16; do
    speed_row "$w" native
    speed_row "$w" tvm
  done
  peer_row Q4_0 "$q40"
} > "$table"
cat "$table"
write_section tvm "$table"
