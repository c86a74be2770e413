# Shared by the benchmark scripts (sourced, not run). Builds the project and the JMH classpath, and runs JMH.
# Knobs (environment):
#   JAVA_HOME          a JDK 25 (default /usr/lib/jvm/temurin-25-jdk-amd64)
#   BENCH_NO_BUILD=1   skip the Maven build (same as --no-build): use target/ as it is
#   BENCH_MVN_ARGS     extra Maven arguments, e.g. "-o" (offline) or "-Daligndistil.cuda=OFF"
#   BENCH_RESULTS      where result files go (default benchmarks/results)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
: "${JAVA_HOME:=/usr/lib/jvm/temurin-25-jdk-amd64}"
export JAVA_HOME
JAVA="$JAVA_HOME/bin/java"
RESULTS="${BENCH_RESULTS:-$ROOT/benchmarks/results}"
RUNS="$ROOT/target/bench-runs"
mkdir -p "$RESULTS" "$RUNS"

bench_build() {
  if [[ "${BENCH_NO_BUILD:-0}" == 1 ]]; then
    echo "bench: --no-build: using target/ as it is" >&2
  else
    echo "bench: building (mvn test-compile: native libraries via CMake, classes, JMH benchmark list)" >&2
    # shellcheck disable=SC2086
    mvn -q -B ${BENCH_MVN_ARGS:-} -DskipTests test-compile >&2
  fi
  if [[ ! -f target/bench.cp || pom.xml -nt target/bench.cp ]]; then
    # shellcheck disable=SC2086
    mvn -q -B ${BENCH_MVN_ARGS:-} dependency:build-classpath -Dmdep.outputFile=target/bench.cp -Dmdep.includeScope=test >&2
  fi
  [[ -f target/test-classes/META-INF/BenchmarkList ]] || { echo "bench: no JMH benchmark list: the annotation processor did not run" >&2; exit 1; }
  [[ -f target/native/libaligndistil_cpu.so ]] || { echo "bench: target/native/libaligndistil_cpu.so missing: build without --no-build" >&2; exit 1; }
  CP="target/classes:target/test-classes:$(cat target/bench.cp)"
}

# Facts for file names: date, machine slug, commit (with -dirty when the tree has uncommitted changes).
bench_names() {
  DATE="$(date +%Y-%m-%d)"
  COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
  DIRTY=false
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then DIRTY=true; fi
  CPU_SLUG="$("$JAVA" -cp "$CP" ai.aligndistil.bench.Results slug cpu 2>/dev/null)"
  LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
  T_START=$(date +%s)
}

# jmh PART_JSON THREADS JMH-ARGS...: one JMH run with OpenMP/OpenBLAS sized like the benchmark's thread count.
# The forks inherit this JVM's flags: native access and the freshly built native libraries in target/native.
jmh() {
  local out="$1" threads="$2"
  shift 2
  echo "bench: JMH $* (OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads)" >&2
  OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" \
    "$JAVA" --enable-native-access=ALL-UNNAMED -Daligndistil.native.dir="$ROOT/target/native" \
      -cp "$CP" org.openjdk.jmh.Main "$@" -rf json -rff "$out"
}

# merge SUITE OUT PARTS...: one result file plus its .meta.json.
merge() {
  local suite="$1" out="$2"
  shift 2
  "$JAVA" -cp "$CP" ai.aligndistil.bench.Results merge --suite "$suite" --out "$out" --commit "$COMMIT" --dirty "$DIRTY" \
    --load-start "$LOAD_START" --elapsed-s "$(( $(date +%s) - T_START ))" --command "${BENCH_COMMAND:-}" "$@" >&2
}

render() {
  "$JAVA" -Djava.awt.headless=true -cp "$CP" ai.aligndistil.bench.Report render "$@" >&2
}

# The CPU code path the fused kernel takes in this run: AD_CPU_ISA when it names a path, else what "auto" picks
# (avx512 where the CPU has AVX-512 F/BW/DQ/VL, else avx2).
bench_isa() {
  case "${AD_CPU_ISA:-}" in
    avx512|avx2|portable) echo "$AD_CPU_ISA" ;;
    *) if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo \
          && grep -qw avx512vl /proc/cpuinfo; then echo avx512; else echo avx2; fi ;;
  esac
}

# cloop_build ISA: builds the issue-15 C loop (benchmarks/cloop/cloop.c) for that path into target/cloop/cloop-ISA,
# linked against target/native/libaligndistil_cpu.so: avx512 = -march=native -mprefer-vector-width=512, avx2 =
# -march=native with AVX-512 off. Prints the binary's path.
cloop_build() {
  local isa="$1" out="$ROOT/target/cloop/cloop-$1" flags
  mkdir -p "$ROOT/target/cloop"
  case "$isa" in
    avx512) flags=(-march=native -mprefer-vector-width=512) ;;
    *) flags=(-march=native -mno-avx512f) ;;
  esac
  gcc -O3 "${flags[@]}" -ffast-math -fopenmp -I"$ROOT/native/include" "$ROOT/benchmarks/cloop/cloop.c" -o "$out" \
    -L"$ROOT/target/native" -laligndistil_cpu -Wl,-rpath,"$ROOT/target/native" -lm >&2
  echo "$out"
}
