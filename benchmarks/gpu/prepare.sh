#!/usr/bin/env bash
# Prepares a self-contained bundle to run the GPU tests and benchmarks on a machine that has a CUDA driver but no
# JDK and no Maven (the project's GPU boxes): a jlink-ed JDK 25 runtime (jdk.tar.xz, 14 MB; 63 MB unpacked by
# unpack-jdk.sh on the box), the project's jar with both native libraries, the test classes, the JUnit console
# launcher, JMH and the JavaCPP CUDA presets. Run here (the build machine):
#   benchmarks/gpu/prepare.sh            -> target/gpu-bundle/ (about 42 MB: well under the 64 MB a device call carries)
# then, on the GPU machine, from the repository root with target/gpu-bundle carried along:
#   benchmarks/gpu/run-gpu-tests.sh
#   benchmarks/gpu/bench.sh                 (the CUDA benchmark suites; JMH is in the bundle too)
#   benchmarks/gpu/verify.sh                (issue 6's check in under 5 minutes: correctness, sanitizers, ncu, timings vs floors)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${JAVA_HOME:=/usr/lib/jvm/temurin-25-jdk-amd64}"
export JAVA_HOME
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/lib"
mvn -q -B -ntp -DskipTests package test-compile
mvn -q -B -ntp dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.4 -DoutputDirectory="$out/lib"
cp target/aligndistil.jar "$out/lib/"
# JMH and its two dependencies, for the benchmark suites (benchmarks/gpu/bench.sh); the bench classes are in test-classes
mvn -q -B -ntp dependency:copy-dependencies -DincludeScope=test -DincludeGroupIds=org.openjdk.jmh,net.sf.jopt-simple,org.apache.commons \
  -DexcludeArtifactIds=commons-lang3,commons-io,commons-compress -DoutputDirectory="$out/lib"
# the command line's own dependencies (picocli, SLF4J with slf4j-simple and its System.Logger bridge), for verify.sh's
# `cli.Main replay` step; version-stripped names so verify.sh can name them
mvn -q -B -ntp dependency:copy-dependencies -DincludeScope=runtime -DincludeGroupIds=info.picocli,org.slf4j \
  -DincludeArtifactIds=picocli,slf4j-api,slf4j-simple,slf4j-jdk-platform-logging -Dmdep.stripVersion=true -DoutputDirectory="$out/lib"
# the JavaCPP CUDA presets (bindings only, about 6 MB) and JavaCPP, for CudaPresetsProbe (bench.sh, verify.sh)
mvn -q -B -ntp dependency:copy-dependencies -DincludeScope=test -DincludeGroupIds=org.bytedeco -DincludeArtifactIds=cuda,javacpp \
  -DoutputDirectory="$out/lib"
echo "$(git rev-parse --short HEAD)$([[ -n "$(git status --porcelain --untracked-files=no)" ]] && echo -dirty)" > "$out/COMMIT"
# test classes and the few test-scope jars the kernel tests need (JUnit comes with the console launcher)
cp -r target/test-classes "$out/test-classes"
# the JDK: jlink-ed uncompressed (xz then compresses the whole better than jlink's zip), native symbol tables
# stripped (libjvm.so 30 -> 25 MB), packed as jdk.tar.xz; unpack-jdk.sh unpacks it on the box
jdk_tmp="$(mktemp -d)"
"$JAVA_HOME/bin/jlink" --add-modules java.base,java.logging,java.management,java.xml,jdk.management,jdk.unsupported \
  --strip-debug --no-header-files --no-man-pages --compress=zip-0 --output "$jdk_tmp/jdk"
find "$jdk_tmp/jdk" -name '*.so' -exec strip --strip-unneeded {} +
"$jdk_tmp/jdk/bin/java" -version 2>&1 | head -1
XZ_OPT="-6 -T0" tar -cJf "$out/jdk.tar.xz" -C "$jdk_tmp" jdk
rm -rf "$jdk_tmp"
# the native GPU self-test (double-precision host reference; --bench for timing), linked against the same library
cmake -S native -B target/native-tests -DCMAKE_BUILD_TYPE=Release -DAD_CPU=OFF -DAD_BUILD_TESTS=ON -DAD_OUTPUT_DIR="$PWD/$out/native" >/dev/null
targets=(fdl_cuda_selftest)
for p in fll_cuda_selftest fll_cuda_bench; do grep -q "$p" native/CMakeLists.txt && [[ -f native/tests/$p.cu ]] && targets+=("$p"); done
cmake --build target/native-tests -j2 --target "${targets[@]}" >/dev/null
for t in "${targets[@]}"; do
  [[ -x "$out/native/$t" ]] || find target/native-tests -name "$t" -type f -exec cp {} "$out/native/" \;
done
# the probe of benchmarks/gpu/verify.sh and, when CMake has no target for them but their sources exist, the
# fused-linear self-test and benchmark, linked against the bundle's library (verify.sh builds what is missing on the box)
if command -v nvcc >/dev/null; then
  # shellcheck disable=SC2054,SC2016 # the commas belong to -gencode; $ORIGIN is for the linker, not the shell
  nvl=(-O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Inative/include -L"$out/native" -laligndistil_cuda -Xlinker '-rpath=$ORIGIN' -ldl)
  nvcc benchmarks/gpu/fdl_cuda_probe.cu "${nvl[@]}" -o "$out/native/fdl_cuda_probe"
  for p in fll_cuda_selftest fll_cuda_bench; do # when CMake does not know them yet
    [[ -f native/tests/$p.cu && ! -x "$out/native/$p" ]] && { nvcc native/tests/$p.cu "${nvl[@]}" -o "$out/native/$p" || echo "prepare: $p did not link against the library; verify.sh will build it on the box"; }
  done
fi
readelf -S target/native/libaligndistil_cuda.so | grep -q nv_fatbin && echo "prepare: CUDA library has a fatbin: $(grep -a -o -E 'sm_[0-9]+a?' target/native/libaligndistil_cuda.so | sort -u | tr '\n' ' ')"
du -sh "$out"
kb=$(du -sk "$out" | cut -f1)
(( kb < 56 * 1024 )) || echo "prepare: WARNING: the bundle is $(( kb / 1024 )) MB; a device call carries 64 MB in all, working tree included" >&2
