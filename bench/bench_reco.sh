#!/usr/bin/env bash
# bench_reco.sh -- recommendation quality on the real data sets: hit rate
# @10 of propstream's recommendations (co-purchase, filled up with the
# most purchased products) against a most-popular baseline.
#
#   bench/bench_reco.sh
#   BENCH_RECO_ARGS="--also-top-n 100" bench/bench_reco.sh
#
# Steps: build propstream and reco_eval (Release, into build-bench/ or
# $BENCH_BUILD_DIR); for every CSV of $BENCH_DATA_DIR (default
# ../shared/data) that `propstream import` has a layout for (rees46,
# online-retail), import it to a JSON file; run bench/reco_eval on it: the
# events are replayed in time order through the pipeline in memory (no
# Kafka, no Redis) and every PURCHASE in the last 20 % of time is checked
# against the customer's top-10 reco taken just before it (as published,
# and its co-purchase part alone), and against the 10 most purchased
# products so far (those the customer bought left out).  See
# bench/reco_eval.c for the exact definitions.
#
# Knobs (environment): BENCH_BUILD_DIR (<repo>/build-bench), BENCH_DATA_DIR,
# BENCH_RECO_ARGS (extra reco_eval options: --k, --test-frac,
# --flush-every, --also-top-n), BENCH_KEEP=1 (keep the JSON files).
#
# Data: REES46 Open CDP (Kaggle mkechinov/ecommerce-behavior-data-from-
# multi-category-store) and UCI Online Retail (Chen 2015, CC BY 4.0); see
# the data directory's SOURCES.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${BENCH_BUILD_DIR:-$repo/build-bench}
data=${BENCH_DATA_DIR:-$(cd "$repo/../shared/data" 2>/dev/null && pwd || true)}
eval_args=${BENCH_RECO_ARGS:-}

work=$(mktemp -d /tmp/propstream-recobench.XXXXXX)
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

[[ -n $data && -d $data ]] || { log "no data directory (BENCH_DATA_DIR)"; exit 1; }

# --- build ---------------------------------------------------------------
log "building (Release) in $build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPS_BUILD_TESTS=OFF \
    >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$build" --target propstream reco_eval -j"$(nproc)" \
    >>"$work/cmake.log" 2>&1 || { tail -50 "$work/cmake.log" >&2; exit 1; }
ps_bin=$build/propstream
eval_bin=$build/reco_eval

# The import layout of a CSV, from its header ("" when none fits).
layout_of() {
    local header
    header=$(head -1 "$1" | tr -d '\r' | sed 's/^\xef\xbb\xbf//')
    case $header in
        event_time,event_type,product_id,*user_id*) echo rees46 ;;
        InvoiceNo,StockCode,*CustomerID*) echo online-retail ;;
        *) echo "" ;;
    esac
}

printf '\npropstream recommendation benchmark (hit rate @10, last 20%% of time)\n\n'
found=0
for csv in "$data"/*.csv; do
    [[ -e $csv ]] || continue
    name=$(basename "$csv" .csv)
    layout=$(layout_of "$csv")
    if [[ -z $layout ]]; then
        log "$name: no import layout fits its header, skipped"
        continue
    fi
    found=1
    log "$name: import --format-in $layout"
    "$ps_bin" import -o "$work/$name.json" --format json --format-in "$layout" \
        "$csv" >"$work/$name.import.json" 2>"$work/$name.import.err" \
        || { tail -20 "$work/$name.import.err" >&2; exit 1; }
    # shellcheck disable=SC2086
    "$eval_bin" --name "$name" $eval_args "$work/$name.json" \
        | tee "$work/$name.eval.out"
    echo
done
(( found )) || { log "no importable CSV in $data"; exit 1; }
