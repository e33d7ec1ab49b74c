#!/usr/bin/env bash
# bench_consume.sh -- propstream's events/s next to a raw librdkafka consume
# of the same topic, in the same run.
#
#   bench/bench_consume.sh            # ~1,000,000 events
#   BENCH_EVENTS=200000 bench/bench_consume.sh
#
# Steps: build (Release, into build-bench/ or $BENCH_BUILD_DIR), start
# `propstream broker` (one topic, $BENCH_PARTITIONS = 32 partitions) and a
# throw-away redis-server on free loopback ports, fill the topic with
# `propstream gen` (Confluent Avro), consume it once with bench/raw_consume
# (plain librdkafka high-level consumer, new group, every payload byte
# touched) and once with `propstream run -e` (new group, fresh Redis), and
# print both rates and their ratio.  Both figures are end to end: process
# start to exit, group join included.  Both figures are also given without the
# group join: raw_consume's own assignment-to-end time, and propstream's
# from its first "assigned" log line to its "caught up" one.  Servers are stopped on exit, however the
# script ends.
#
# The mock cluster keeps about 5 MB per partition and silently drops the
# oldest data beyond that, so the script checks that what was consumed is
# what gen wrote and warns otherwise (raise BENCH_PARTITIONS or lower
# BENCH_EVENTS).
#
# Knobs (environment): BENCH_EVENTS (1000000), BENCH_PARTITIONS (32),
# BENCH_BUILD_DIR (<repo>/build-bench), BENCH_FORMAT (confluent),
# BENCH_SEED (1), BENCH_FLUSH_MS (100, propstream's --flush-interval-ms),
# BENCH_KEEP=1 (keep the logs in the temporary directory).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
events=${BENCH_EVENTS:-1000000}
partitions=${BENCH_PARTITIONS:-32}
build=${BENCH_BUILD_DIR:-$repo/build-bench}
format=${BENCH_FORMAT:-confluent}
seed=${BENCH_SEED:-1}
flush_ms=${BENCH_FLUSH_MS:-100}
topic=bench
# gen draws about 11.3 records per customer with its default model.
customers=$(( (events * 10 + 112) / 113 ))
(( customers >= 1 )) || customers=1

work=$(mktemp -d /tmp/propstream-bench.XXXXXX)
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
now() { date +%s.%N; }


# --- build ---------------------------------------------------------------
log "building (Release) in $build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPS_BUILD_TESTS=OFF \
    >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$build" --target propstream raw_consume -j"$(nproc)" \
    >>"$work/cmake.log" 2>&1 || { tail -50 "$work/cmake.log" >&2; exit 1; }
ps_bin=$build/propstream
raw_bin=$build/raw_consume

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
log "generating ~$events events ($customers customers, $format)"
t0=$(now)
"$ps_bin" gen -b "$bootstrap" -t "$topic" -n "$customers" --seed "$seed" \
    --format "$format" >"$work/gen.json" 2>"$work/gen.err" \
    || { tail -20 "$work/gen.err" >&2; exit 1; }
t1=$(now)
records=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"])' \
    "$work/gen.json" 2>/dev/null \
    || grep -o '"records": *[0-9]*' "$work/gen.json" | grep -o '[0-9]*$')
log "gen wrote $records records in $(printf '%.1f' "$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')") s"

# --- raw librdkafka ------------------------------------------------------
log "raw_consume"
t0=$(now)
"$raw_bin" -b "$bootstrap" -t "$topic" -g "bench-raw-$$" \
    >"$work/raw.out" 2>"$work/raw.err" || { cat "$work/raw.err" >&2; exit 1; }
t1=$(now)
raw_wall=$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')
raw_line=$(cat "$work/raw.out")
raw_msgs=$(sed -n 's/^raw_consume: \([0-9]*\) messages.*/\1/p' "$work/raw.out")
raw_inner=$(sed -n 's/.* \([0-9.]*\) msg\/s$/\1/p' "$work/raw.out")
log "$raw_line (wall $(printf '%.2f' "$raw_wall") s)"

# --- propstream ----------------------------------------------------------
log "propstream run -e"
t0=$(now)
"$ps_bin" run -b "$bootstrap" -t "$topic" -g "bench-ps-$$" \
    -r "127.0.0.1:$redis_port" -e --flush-interval-ms "$flush_ms" \
    >"$work/run.out" 2>"$work/run.err" \
    || { tail -30 "$work/run.err" >&2; exit 1; }
t1=$(now)
ps_wall=$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')
# propstream's log: first "assigned" line to "caught up", by their
# ISO-8601 timestamps (same day assumed); empty when not found.
ps_inner_s=$(awk '
    function secs(ts,  t) { split(substr(ts, 12, 12), t, ":"); return t[1]*3600 + t[2]*60 + t[3] }
    / info: assigned / && a == "" { a = secs($1) }
    / info: caught up/ { c = secs($1) }
    END { if (a != "" && c != "" && c > a) printf "%.3f", c - a }' "$work/run.err")
ps_in=$(redis-cli -p "$redis_port" hget ps:metrics events_in)
ps_applied=$(redis-cli -p "$redis_port" hget ps:metrics events_applied)
ps_flushes=$(redis-cli -p "$redis_port" hget ps:metrics flushes)
log "propstream: events_in $ps_in, applied $ps_applied, $ps_flushes flushes (wall $(printf '%.2f' "$ps_wall") s)"

# --- report --------------------------------------------------------------
if [[ $raw_msgs != "$records" || $ps_in != "$records" ]]; then
    log "WARNING: gen wrote $records records, raw_consume read $raw_msgs," \
        "propstream read $ps_in: the mock cluster (~5 MB per partition)" \
        "may have dropped old data; use fewer BENCH_EVENTS or more" \
        "BENCH_PARTITIONS"
fi
awk -v n="$records" -v rm="$raw_msgs" -v rw="$raw_wall" -v ri="$raw_inner" \
    -v pm="$ps_in" -v pw="$ps_wall" -v pi="$ps_inner_s" -v parts="$partitions" \
    -v fmt="$format" '
BEGIN {
    raw = rm / rw; ps = pm / pw;
    psi = (pi != "" && pi > 0) ? pm / pi : 0;
    printf "\npropstream consume benchmark: %d records (%s), %d partitions, mock cluster\n", n, fmt, parts;
    printf "%-44s %10s %9s %12s %12s\n", "", "messages", "wall s", "msg/s wall", "msg/s nojoin";
    printf "%-44s %10d %9.2f %12.0f %12.0f\n", "raw librdkafka (bench/raw_consume)", rm, rw, raw, ri;
    if (psi > 0)
        printf "%-44s %10d %9.2f %12.0f %12.0f\n", "propstream run -e (decode+aggregate+Redis)", pm, pw, ps, psi;
    else
        printf "%-44s %10d %9.2f %12.0f %12s\n", "propstream run -e (decode+aggregate+Redis)", pm, pw, ps, "n/a";
    printf "ratio propstream / raw: %.2f (wall)", (raw > 0 ? ps / raw : 0);
    if (psi > 0 && ri > 0)
        printf ", %.2f (without group join)", psi / ri;
    printf "\n";
}'
