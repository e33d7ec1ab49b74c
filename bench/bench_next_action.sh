#!/usr/bin/env bash
# bench_next_action.sh -- calibration of propstream's next-action scores
# (next_click .. next_spend of ps:cust:{id}) on generated data.
#
#   bench/bench_next_action.sh
#   BENCH_CUSTOMERS=100000 BENCH_SEED=7 bench/bench_next_action.sh
#
# Steps: build propstream and next_action_calibration (Release, into
# build-bench/ or $BENCH_BUILD_DIR); `propstream gen -n $BENCH_CUSTOMERS
# --seed $BENCH_SEED --truth FILE` (the events with each customer's true
# segment, as JSON lines; the Kafka output goes to /dev/null); then
# bench/next_action_calibration replays FILE in time order through the
# pipeline in memory and, before every event of a customer that already
# had one, compares the customer's predicted P(next type) with the type
# that came: mean predicted vs observed frequency per type, per segment
# (propstream's at prediction time, and the generator's), and a
# reliability table of next_purchase; beside it, reference forecasts built
# from the tool's own transition counts (pooled, global prior + own
# counts, segment prior with a -> b counted at the segment after a -- the
# rule of next_action.c, cross-checked against propstream's forecasts --
# or after b, the rule before next_action's state version 2) that show
# where a miscalibration comes from.  See bench/next_action_calibration.c.
#
# Knobs (environment): BENCH_BUILD_DIR (<repo>/build-bench),
# BENCH_CUSTOMERS (20000), BENCH_SEED (42), BENCH_GEN_ARGS (more gen
# options), BENCH_CAL_ARGS (--flush-every, --bins), BENCH_KEEP=1 (keep the
# truth file).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${BENCH_BUILD_DIR:-$repo/build-bench}
customers=${BENCH_CUSTOMERS:-20000}
seed=${BENCH_SEED:-42}
gen_args=${BENCH_GEN_ARGS:-}
cal_args=${BENCH_CAL_ARGS:-}

work=$(mktemp -d /tmp/propstream-nextbench.XXXXXX)
cleanup() {
    local rc=$?
    if (( rc != 0 )) || [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench: exit $rc; files kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf 'bench: %s\n' "$*" >&2; }

# --- build ---------------------------------------------------------------
log "building (Release) in $build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPS_BUILD_TESTS=OFF \
    >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$build" --target propstream next_action_calibration \
    -j"$(nproc)" >>"$work/cmake.log" 2>&1 \
    || { tail -50 "$work/cmake.log" >&2; exit 1; }

# --- data ----------------------------------------------------------------
log "gen -n $customers --seed $seed"
# shellcheck disable=SC2086
"$build/propstream" gen -n "$customers" --seed "$seed" --format json \
    -o /dev/null --progress-s 0 --truth "$work/truth.json" $gen_args \
    >"$work/gen.json" 2>"$work/gen.err" \
    || { tail -20 "$work/gen.err" >&2; exit 1; }

printf '\npropstream next-action calibration (gen -n %s --seed %s)\n\n' \
    "$customers" "$seed"
# shellcheck disable=SC2086
"$build/next_action_calibration" $cal_args "$work/truth.json" \
    | tee "$work/calibration.out"
