#!/usr/bin/env bash
# Runs the gpu-tagged tests (the CUDA backend against the float64 reference) with the bundle made by prepare.sh,
# on a machine without Maven or a JDK. Results (JUnit XML) go to ${OUT:-target/gpu-results}.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=target/gpu-bundle
res="${OUT:-target/gpu-results}"
mkdir -p "$res"
"$b/jdk/bin/java" --enable-native-access=ALL-UNNAMED -Xmx8g \
  -jar "$b/lib/junit-platform-console-standalone-1.14.4.jar" execute \
  --class-path "$b/test-classes:$b/lib/aligndistil.jar" \
  --include-tag gpu --select-package ai.aligndistil.kernel \
  --reports-dir "$res" --details=summary --disable-banner
