#!/usr/bin/env bash
# Command (a): the main job end to end on embedded defaults.
#
# Installs what is missing, builds, starts a throw-away redis-server and
# propstream's embedded Kafka (librdkafka's mock cluster) on free loopback
# ports, generates seed-like events into topic "events", runs the processor
# until it has caught up, and prints what landed in Redis.  Everything it
# started is stopped on exit.
#
# Knobs (environment): DEMO_CUSTOMERS (2000), DEMO_BAD (0.01 = 1 % malformed
# records), DEMO_SEED (42), DEMO_PARTITIONS (8), DEMO_KEEP=1 to leave Redis
# running afterwards for exploring with redis-cli.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
customers=${DEMO_CUSTOMERS:-2000}
bad=${DEMO_BAD:-0.01}
seed=${DEMO_SEED:-42}
partitions=${DEMO_PARTITIONS:-8}

"$root/deploy/install-deps.sh"
echo "== building" >&2
"$root/deploy/build.sh" "$root/build" -DPS_BUILD_TESTS=OFF
ps="$root/build/propstream"

work=$(mktemp -d /tmp/propstream-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${DEMO_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

. "$root/deploy/servers.sh"
ps_start_redis "$work" || exit 1
port=$REDIS_PORT
pids+=("$REDIS_PID")
echo "== redis-server on 127.0.0.1:$port" >&2

ps_start_broker "$ps" "$work" "events:$partitions" || exit 1
pids+=("$BROKER_PID")
bootstrap=$BOOTSTRAP
echo "== mock Kafka cluster at $bootstrap (topic events, $partitions partitions)" >&2

echo "== generating events for $customers customers ($bad malformed)" >&2
"$ps" gen -b "$bootstrap" -t events -n "$customers" --seed "$seed" \
  --format confluent --bad "$bad" >"$work/gen.json" 2>"$work/gen.log"
tail -n 20 "$work/gen.log" >&2 || true

echo "== running propstream until it has caught up" >&2
start=$(date +%s.%N)
"$ps" run -b "$bootstrap" -t events -g demo -r "127.0.0.1:$port" -e \
  --stats-interval-s 2
end=$(date +%s.%N)

raw() { redis-cli -p "$port" --raw "$@"; }
h() { raw HGET "$1" "$2"; }
# print a hash as "field value" lines, indented
hash_lines() { raw HGETALL "$1" | paste - - | awk -F'\t' -v ind="$2" '{ printf "%s%-24s %s\n", ind, $1, $2 }'; }
# print a zset's top members with scores, on one line
zset_line() { raw ZREVRANGE "$1" 0 "$2" WITHSCORES | sed "/^$/d" | paste - - | awk '{ printf "%s %s(%.3f)", (NR > 1 ? "," : ""), $1, $2 } END { if (NR == 0) printf " (empty)"; print "" }'; }
json_num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$work/gen.json" | head -n1; }

echo
echo "================ what landed in Redis (127.0.0.1:$port) ================"
printf 'generator wrote      %s records (%s good, %s malformed), seed %s\n' \
  "$(json_num records)" "$(json_num good)" "$(json_num bad)" "$seed"
printf 'records consumed     %s\n' "$(h ps:metrics events_in)"
printf 'events applied       %s   (ps:global events = %s)\n' \
  "$(h ps:metrics events_applied)" "$(h ps:global events)"
printf 'malformed -> ps:dlq  %s   (stream length %s), by reason:\n' \
  "$(h ps:metrics events_bad)" "$(raw XLEN ps:dlq)"
raw HGETALL ps:metrics | paste - - | awk '$1 ~ /^events_bad_/ { sub(/^events_bad_/, "", $1); printf "    %-22s %s\n", $1, $2 }'
printf 'customers            %s keys ps:cust:*\n' \
  "$(raw --scan --pattern 'ps:cust:*' | grep -vc ':intent$\|:reco$' || true)"
printf 'flushes              %s (last took %s us), lag %s\n' \
  "$(h ps:metrics flushes)" "$(h ps:metrics last_flush_duration_us)" "$(h ps:metrics lag)"
fmt4() { awk -v v="$1" 'BEGIN { printf "%.4f", v }'; }
printf 'funnels (trials)     %s closed, %s purchased, %s direct purchases\n' \
  "$(h ps:global trials)" "$(h ps:global successes)" "$(h ps:global direct_purchases)"
printf 'P(purchase) global   %s  (95%% credible interval %s .. %s)\n' \
  "$(fmt4 "$(h ps:global p_purchase)")" "$(fmt4 "$(h ps:global p_purchase_lo)")" \
  "$(fmt4 "$(h ps:global p_purchase_hi)")"
printf '  by path            click only %s, wishlist only %s, click+wishlist %s\n' \
  "$(fmt4 "$(h ps:global p_purchase_c)")" "$(fmt4 "$(h ps:global p_purchase_w)")" \
  "$(fmt4 "$(h ps:global p_purchase_cw)")"
echo "campaigns            P(purchase), P(campaign | purchase) by Bayes' rule:"
for key in $(raw --scan --pattern 'ps:campaign:*' | sort); do
  printf '    %-20s %s  %s\n' "${key#ps:campaign:}" "$(fmt4 "$(h "$key" p_purchase)")" \
    "$(fmt4 "$(h "$key" p_campaign_given_purchase)")"
done
echo "segments (k-means)   name, size, centroid: mean amount / purchases, P(purchase), P(amount >= 70,000):"
for key in $(raw --scan --pattern 'ps:segment:*' | sort); do
  printf '    %-8s %-8s %6s   %9.0f / %5.2f   %s   %s\n' "${key#ps:segment:}" \
    "$(h "$key" name)" "$(h "$key" size)" "$(h "$key" centroid_mean_amount)" \
    "$(h "$key" centroid_purchases)" "$(fmt4 "$(h "$key" p_purchase)")" \
    "$(fmt4 "$(h "$key" p_spend_gt)")"
done
printf 'triggers (ps:triggers) %s high_intent, %s wishlist_abandoned, %s segment_changed\n' \
  "$(raw XRANGE ps:triggers - + | grep -cx high_intent || true)" \
  "$(raw XRANGE ps:triggers - + | grep -cx wishlist_abandoned || true)" \
  "$(raw XRANGE ps:triggers - + | grep -cx segment_changed || true)"
printf 'reverse paths (ps:paths) %s entries; by path:' "$(raw XLEN ps:paths)"
raw HGETALL ps:global | paste - - | awk '$1 ~ /^path_/ { sub(/^path_/, "", $1); printf " %s %s;", $1, $2 } END { print "" }'
echo "cohort windows       cohort, 30-day n / mean / active customers (ps:cohort:{m}:w30d):"
for key in $(raw --scan --pattern 'ps:cohort:*:w30d' | grep -v ':seg:' | sort); do
  c=${key#ps:cohort:}
  printf '    %-8s %6s  %10.2f  %6s\n' "${c%:w30d}" "$(h "$key" n)" \
    "$(h "$key" mean)" "$(h "$key" active)"
done
echo
echo "three customers:"
for key in $(raw --scan --pattern 'ps:cust:*' | grep -v ':intent$\|:reco$' | sort | head -n 3); do
  echo "  $key"
  hash_lines "$key" "    " | grep -v '^    story '
  printf '    %-24s %s\n' story "$(h "$key" story)"
  printf '    %-24s' "reco (top 5)"; zset_line "$key:reco" 4
  printf '    %-24s' "intent (open funnels)"; zset_line "$key:intent" 4
done
echo
echo "first dead letter (XRANGE ps:dlq - + COUNT 1):"
raw XRANGE ps:dlq - + COUNT 1 | tail -n +2 | paste - - | awk '{ v = $2; for (i = 3; i <= NF; i++) v = v " " $i; if (length(v) > 60) v = substr(v, 1, 57) "..."; printf "    %-18s %s\n", $1, v }'
echo
echo "offsets (ps:offsets:demo):"
hash_lines ps:offsets:demo "    "
awk -v a="$start" -v b="$end" 'BEGIN { printf "\npropstream run took %.2f s, including the consumer group join\n", b - a }'
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "Redis keeps running on 127.0.0.1:$port (redis-cli -p $port); kill it when done."
  pids=("${pids[@]:1}")  # keep redis
fi
