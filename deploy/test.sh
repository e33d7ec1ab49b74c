#!/usr/bin/env bash
# Command (b): install what is missing, build, and run every test.
#
# Runs the whole CTest suite twice: a normal build, then a build with
# AddressSanitizer + UndefinedBehaviorSanitizer (PS_SANITIZE=ON), without
# the slow fault-injection tests (label "slow").  Each test
# starts its own redis-server and mock Kafka cluster on free loopback ports
# and stops them afterwards.  Set PS_TEST_SANITIZE=0 to skip the sanitizer
# pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/deploy/install-deps.sh"

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
  local dir=$1 ctest_args=$2; shift 2
  echo "== build $dir $*"
  "$root/deploy/build.sh" "$dir" "$@"
  echo "== ctest $dir $ctest_args"
  # shellcheck disable=SC2086
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 1500 $ctest_args)
}

run_suite "$root/build" ""
if [ "${PS_TEST_SANITIZE:-1}" != 0 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # the fault-injection tests (label "slow") run in the normal pass only:
  # they drive the propstream binary, whose code the sanitizer pass
  # already covers through the other integration tests
  run_suite "$root/build-asan" "-LE slow" -DPS_SANITIZE=ON
fi
echo "== all tests passed"
