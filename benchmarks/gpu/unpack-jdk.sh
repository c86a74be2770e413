#!/usr/bin/env bash
# target/gpu-bundle carries its jlink-ed JDK as jdk.tar.xz (about 14 MB instead of 63 unpacked, so the bundle stays
# well under the 64 MB a device call can carry): unpacks it once, next to itself (about a second). Idempotent; does
# nothing without a bundle JDK (the callers say so). bench.sh, verify.sh and run-gpu-tests.sh call it.
#   benchmarks/gpu/unpack-jdk.sh [BUNDLE]     default target/gpu-bundle
set -euo pipefail
b="${1:-target/gpu-bundle}"
[[ -x "$b/jdk/bin/java" || ! -f "$b/jdk.tar.xz" ]] && exit 0
tar -xJf "$b/jdk.tar.xz" -C "$b"
[[ -x "$b/jdk/bin/java" ]] || { echo "unpack-jdk: $b/jdk.tar.xz did not hold jdk/bin/java" >&2; exit 1; }
