#!/usr/bin/env bash
# Size of libava_runtime.so (C ABI + JNI, stripped) per ABI, as `make android-lib` builds it.
# The goal is under 3 MB per ABI; TVM kernels are not in it (they come with each archive).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
./scripts/android-lib
body=$(mktemp)
{
  echo "## \`libava_runtime.so\` (\`android-lib\`)"
  echo
  echo "Stripped, features \`capi\` + \`jni\` (generation and intent classification), built by"
  echo "\`make android-lib\`: the \`android-lib\` profile (fat LTO, dependencies at \`opt-level = \"z\"\`,"
  echo "the runtime at \`-O2\`), arm64 linked with packed relocations and identical code folding"
  echo "([embedding.md](embedding.md#android-without-an-ndk)). Goal: under 3 MB (3,000,000 bytes) per"
  echo "Android ABI; x86_64-linux is the host build for tests. $(machine_line)."
  echo
  echo "| ABI | bytes | MiB | exported symbols | NEEDED |"
  echo "|---|---:|---:|---:|---|"
  for abi in arm64-v8a x86_64-linux; do
    lib=target/android-lib/$abi/libava_runtime.so
    bytes=$(stat -c %s "$lib")
    exports=$(nm -D --defined-only "$lib" | wc -l)
    needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ')
    mib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
    echo "| $abi | $bytes | $mib | $exports | $needed |"
  done
} > "$body"
write_section android-lib "$body"
rm -f "$body"
echo "android-lib: docs/benchmarks.md updated"
