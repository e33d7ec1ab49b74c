#!/usr/bin/env bash
# Command (b): install what is missing, build, and run every test.
#
# Runs the whole CTest suite twice: a normal build, then a build with
# AddressSanitizer + UndefinedBehaviorSanitizer (PS_SANITIZE=ON).  Each test
# starts its own redis-server and mock Kafka cluster on free loopback ports
# and stops them afterwards.  Set PS_TEST_SANITIZE=0 to skip the sanitizer
# pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/deploy/install-deps.sh"

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
  local dir=$1; shift
  echo "== build $dir $*"
  "$root/deploy/build.sh" "$dir" "$@"
  echo "== ctest $dir"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 600)
}

run_suite "$root/build"
if [ "${PS_TEST_SANITIZE:-1}" != 0 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_suite "$root/build-asan" -DPS_SANITIZE=ON
fi
echo "== all tests passed"
