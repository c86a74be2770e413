#!/usr/bin/env bash
# Build-machine evidence for the benchmark issue's question: do the JavaCPP CUDA presets on the design card
# (org.bytedeco:cuda 13.1-9.19-1.5.13, built against CUDA 13.1) load on a CUDA 13.0 runtime, as the GPU boxes have?
#
#   benchmarks/gpu/presets-load-check.sh [--no-build]
#
# 1. Lists the runtime functions the presets' JNI library (libjnicudart.so) binds that this machine's
#    libcudart.so.13 does not define (nm), and whether those bindings are lazy (no BIND_NOW: the library can load,
#    and a call to one of them would end the process).
# 2. Runs ai.aligndistil.bench.CudaPresetsProbe against this machine's CUDA runtime with a stand-in libcuda.so.1
#    (an empty shared library: a build machine has no driver), so Loader.load and the first runtime calls happen for
#    real. What the driver side answers needs a GPU box: benchmarks/gpu/bench.sh and verify.sh run the same probe there.
# Needs: the CUDA toolkit's lib64 (CUDA_HOME, default /usr/local/cuda), gcc, nm, readelf, unzip.
source "$(dirname "$0")/../lib.sh"
[[ "${1:-}" == --no-build ]] && export BENCH_NO_BUILD=1
bench_build
cuda_lib="${CUDA_HOME:-/usr/local/cuda}/lib64"
[[ -f "$cuda_lib/libcudart.so.13" ]] || { echo "presets check: no $cuda_lib/libcudart.so.13 (set CUDA_HOME)" >&2; exit 1; }
jar="$(tr ':' '\n' < target/bench.cp | grep -E '/cuda-[^/]*-linux-x86_64\.jar$' | head -1)"
[[ -n "$jar" ]] || { echo "presets check: the presets' linux-x86_64 jar is not on the test classpath" >&2; exit 1; }
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
unzip -q -o "$jar" 'org/bytedeco/cuda/linux-x86_64/libjnicudart.so' -d "$w"
jni="$w/org/bytedeco/cuda/linux-x86_64/libjnicudart.so"
nm -D --undefined-only "$jni" | awk '{print $2}' | sed 's/@.*//' | grep '^cuda' | sort -u > "$w/need"
nm -D --defined-only "$cuda_lib/libcudart.so.13" | awk '{print $3}' | sed 's/@.*//' | sort -u > "$w/have"
missing="$(comm -23 "$w/need" "$w/have")"
echo "presets check: $(basename "$jar") binds $(wc -l < "$w/need") cudart functions; $(printf '%s' "$missing" | grep -c . || true) of them are not in $(readlink -f "$cuda_lib/libcudart.so.13"):"
printf '%s\n' "$missing" | sed 's/^/  /'
if readelf -d "$jni" | grep -q -E 'BIND_NOW|FLAGS_1.*NOW'; then echo "presets check: libjnicudart.so binds NOW: it cannot load on this runtime"
else echo "presets check: libjnicudart.so binds lazily (no BIND_NOW): it can load; only a call to a missing function fails"; fi
printf 'int ad_stand_in_for_libcuda;\n' > "$w/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$w/libcuda.so.1" "$w/stub.c"
echo "presets check: CudaPresetsProbe on this runtime, with an empty libcuda.so.1 standing in for the driver:"
LD_LIBRARY_PATH="$w:$cuda_lib" "$JAVA" --enable-native-access=ALL-UNNAMED -cp "$CP" ai.aligndistil.bench.CudaPresetsProbe | tail -1
