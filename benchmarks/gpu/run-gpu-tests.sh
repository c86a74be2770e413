#!/usr/bin/env bash
# Runs the gpu-tagged tests (the CUDA backend against the float64 reference) with the bundle made by prepare.sh,
# on a machine without Maven or a JDK. Results (JUnit XML) go to ${OUT:-target/gpu-results}.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=target/gpu-bundle
benchmarks/gpu/unpack-jdk.sh "$b"
res="${OUT:-target/gpu-results}"
mkdir -p "$res"
# 1. the native self-test of the CUDA library (exit 77 = no GPU)
if [ -x "$b/native/fdl_cuda_selftest" ]; then
  (cd "$b/native" && LD_LIBRARY_PATH=. ./fdl_cuda_selftest) 2>&1 | tee "$res/fdl_cuda_selftest.txt" || echo "fdl_cuda_selftest exited with $?"
fi
# 2. the Java contract tests on the CUDA backend
"$b/jdk/bin/java" --enable-native-access=ALL-UNNAMED -Xmx8g \
  -jar "$b/lib/junit-platform-console-standalone-1.14.4.jar" execute \
  --class-path "$b/test-classes:$b/lib/aligndistil.jar" \
  --include-tag gpu --scan-classpath "$b/test-classes" \
  --reports-dir "$res" --details=summary --disable-banner
