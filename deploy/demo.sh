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

free_port() {
  local p
  for _ in $(seq 200); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "demo: no free port found" >&2; exit 1
}

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
rcli() { redis-cli -p "$port" --no-raw "$@"; }
for _ in $(seq 100); do rcli PING >/dev/null 2>&1 && break; sleep 0.1; done
echo "== redis-server on 127.0.0.1:$port" >&2

"$ps" broker --brokers 1 --topic "events:$partitions" >"$work/broker.out" 2>"$work/broker.log" &
pids+=($!)
for _ in $(seq 150); do [ -s "$work/broker.out" ] && break; sleep 0.1; done
bootstrap=$(head -n1 "$work/broker.out")
[ -n "$bootstrap" ] || { echo "demo: broker did not start:" >&2; cat "$work/broker.log" >&2; exit 1; }
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

h() { rcli HGET "$1" "$2" | tr -d '"'; }
echo
echo "================ what landed in Redis ================"
printf 'generator summary: %s\n' "$(head -c 400 "$work/gen.json")"
echo
echo "ps:metrics"
rcli HGETALL ps:metrics | paste - - | sed 's/^/  /'
echo "ps:global"
rcli HGETALL ps:global | paste - - | sed 's/^/  /'
echo "customers in Redis: $(rcli --scan --pattern 'ps:cust:*' | grep -vc ':intent\|:reco' || true)"
echo "dead letters (ps:dlq): $(rcli XLEN ps:dlq), by reason:"
rcli HGETALL ps:metrics | paste - - | tr -d '"' | grep '^events_bad_' | sed 's/^events_bad_/  /'
echo "first dead letter:"
rcli XRANGE ps:dlq - + COUNT 1 | sed 's/^/  /'
echo "three customers:"
for key in $(rcli --scan --pattern 'ps:cust:*' | tr -d '"' | sort | head -n 3); do
  echo "  $key"
  rcli HGETALL "$key" | paste - - | tr -d '"' | awk '{printf "    %-12s %s\n", $1, $2}'
done
echo "offsets (ps:offsets:demo):"
rcli HGETALL ps:offsets:demo | paste - - | tr -d '"' | sed 's/^/  /'
events=$(h ps:metrics events_in)
awk -v n="$events" -v a="$start" -v b="$end" 'BEGIN { printf "processed %s records in %.2f s (including consumer group join)\n", n, b - a }' 
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "Redis keeps running on 127.0.0.1:$port (redis-cli -p $port); kill it when done."
  pids=("${pids[@]:1}")  # keep redis
fi
