#!/usr/bin/env bash
# bench_segments.sh -- how well propstream's online segments recover the
# generator's true ones, and how close its centroids are to a batch k-means.
#
#   bench/bench_segments.sh                  # 20,000 customers
#   BENCH_CUSTOMERS=3000 bench/bench_segments.sh
#
# Steps: build (Release, into build-bench/ or $BENCH_BUILD_DIR), start
# `propstream broker` (one topic, $BENCH_PARTITIONS = 16 partitions) and a
# throw-away redis-server on free loopback ports, fill the topic with
# `propstream gen -n $BENCH_CUSTOMERS --seed $BENCH_SEED --truth FILE`,
# consume it once with `propstream run -e` (fresh Redis), then run
# bench/segments_eval on the truth file and Redis: adjusted Rand index
# between propstream's segments and the true ones, the confusion table,
# and the k-means inertia of propstream's final centroids against a batch
# Lloyd k-means (several restarts, fixed seed) on the same final features.
# Servers are stopped on exit, however the script ends.
#
# segments_eval is built by CMake when CMakeLists.txt has its target, else
# by hand (gcc, pkg-config hiredis jansson gsl) into the build directory.
#
# Knobs (environment): BENCH_CUSTOMERS (20000), BENCH_SEED (7, gen's seed),
# BENCH_PARTITIONS (16), BENCH_BUILD_DIR (<repo>/build-bench),
# BENCH_FORMAT (confluent), BENCH_FLUSH_MS (100), BENCH_RESTARTS (10, Lloyd
# restarts), BENCH_RUN_ARGS (extra `propstream run` options, e.g.
# "--segments-batch 512"), BENCH_FEATURES (k-means feature list, e.g.
# "mean_amount,purchases,clicks": given to both `propstream run
# --segments-features` and `segments_eval --features`; unset, a
# --segments-features in BENCH_RUN_ARGS is passed on to segments_eval, else
# both use their default mean_amount,purchases), BENCH_KEEP=1 (keep the
# logs and the truth file in the temporary directory).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
customers=${BENCH_CUSTOMERS:-20000}
seed=${BENCH_SEED:-7}
partitions=${BENCH_PARTITIONS:-16}
build=${BENCH_BUILD_DIR:-$repo/build-bench}
format=${BENCH_FORMAT:-confluent}
flush_ms=${BENCH_FLUSH_MS:-100}
restarts=${BENCH_RESTARTS:-10}
run_args=${BENCH_RUN_ARGS:-}
features=${BENCH_FEATURES:-}
topic=segments

# The feature list segments_eval must rebuild is the one propstream runs
# with: BENCH_FEATURES for both, else whatever BENCH_RUN_ARGS gives run.
if [[ -n $features ]]; then
    if [[ " $run_args " == *" --segments-features"[\ =]* ]]; then
        printf 'bench: BENCH_FEATURES and --segments-features in BENCH_RUN_ARGS: give one\n' >&2
        exit 2
    fi
    run_args="$run_args --segments-features $features"
else
    read -r -a _args <<<"$run_args"
    for ((_i = 0; _i < ${#_args[@]}; _i++)); do
        case ${_args[_i]} in
        --segments-features=*) features=${_args[_i]#*=} ;;
        --segments-features) features=${_args[_i + 1]:-} ;;
        esac
    done
fi
eval_args=()
[[ -n $features ]] && eval_args=(--features "$features")

work=$(mktemp -d /tmp/propstream-segbench.XXXXXX)
broker_pid=""
redis_pid=""
cleanup() {
    local rc=$?
    [[ -n $broker_pid ]] && kill -TERM "$broker_pid" 2>/dev/null || true
    [[ -n $redis_pid ]] && kill -TERM "$redis_pid" 2>/dev/null || true
    [[ -n $broker_pid ]] && wait "$broker_pid" 2>/dev/null || true
    [[ -n $redis_pid ]] && wait "$redis_pid" 2>/dev/null || true
    if (( rc != 0 )) || [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench: exit $rc; logs kept in $work" >&2
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
if grep -q 'add_executable(segments_eval' "$repo/CMakeLists.txt"; then
    cmake --build "$build" --target propstream segments_eval -j"$(nproc)" \
        >>"$work/cmake.log" 2>&1 || { tail -50 "$work/cmake.log" >&2; exit 1; }
else
    cmake --build "$build" --target propstream -j"$(nproc)" \
        >>"$work/cmake.log" 2>&1 || { tail -50 "$work/cmake.log" >&2; exit 1; }
    log "no segments_eval target in CMakeLists.txt: building it by hand"
    # shellcheck disable=SC2046
    gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wshadow \
        -Wstrict-prototypes -Wno-missing-field-initializers \
        $(pkg-config --cflags hiredis jansson gsl) \
        -o "$build/segments_eval" "$repo/bench/segments_eval.c" \
        "$repo/aggregates/kmeans.c" "$repo/aggregates/welford.c" \
        "$repo/aggregates/normal.c" "$repo/common/buf.c" \
        "$repo/common/error.c" \
        $(pkg-config --libs hiredis jansson gsl) -lm \
        >>"$work/cmake.log" 2>&1 || { tail -50 "$work/cmake.log" >&2; exit 1; }
fi
ps_bin=$build/propstream
eval_bin=$build/segments_eval

# --- servers -------------------------------------------------------------
. "$repo/deploy/servers.sh"
ps_start_redis "$work" || exit 1
redis_port=$REDIS_PORT
redis_pid=$REDIS_PID
ps_start_broker "$ps_bin" "$work" "$topic:$partitions" || exit 1
broker_pid=$BROKER_PID
bootstrap=$BOOTSTRAP
log "redis 127.0.0.1:$redis_port, broker $bootstrap ($partitions partitions)"

# --- data ----------------------------------------------------------------
log "generating $customers customers (seed $seed, $format)"
"$ps_bin" gen -b "$bootstrap" -t "$topic" -n "$customers" --seed "$seed" \
    --format "$format" --truth "$work/truth.jsonl" \
    >"$work/gen.json" 2>"$work/gen.err" \
    || { tail -20 "$work/gen.err" >&2; exit 1; }
records=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"])' \
    "$work/gen.json" 2>/dev/null \
    || grep -o '"records": *[0-9]*' "$work/gen.json" | grep -o '[0-9]*$')
log "gen wrote $records records"

# --- propstream ----------------------------------------------------------
log "propstream run -e $run_args"
# shellcheck disable=SC2086
"$ps_bin" run -b "$bootstrap" -t "$topic" -g "bench-seg-$$" \
    -r "127.0.0.1:$redis_port" -e --flush-interval-ms "$flush_ms" $run_args \
    >"$work/run.out" 2>"$work/run.err" \
    || { tail -30 "$work/run.err" >&2; exit 1; }
ps_in=$(redis-cli -p "$redis_port" hget ps:metrics events_in)
ps_applied=$(redis-cli -p "$redis_port" hget ps:metrics events_applied)
log "propstream: events_in $ps_in, applied $ps_applied"
if [[ $ps_in != "$records" ]]; then
    log "WARNING: gen wrote $records records but propstream read $ps_in:" \
        "the mock cluster (~5 MB per partition) may have dropped old data;" \
        "raise BENCH_PARTITIONS or lower BENCH_CUSTOMERS"
fi

# --- evaluation ----------------------------------------------------------
printf '\npropstream segments benchmark: %d customers, gen seed %d, %d records, %d partitions, features %s\n\n' \
    "$customers" "$seed" "$records" "$partitions" "${features:-mean_amount,purchases}"
"$eval_bin" --truth "$work/truth.jsonl" --redis "127.0.0.1:$redis_port" \
    --restarts "$restarts" "${eval_args[@]}" | tee "$work/eval.out"
