# servers.sh -- throw-away Redis and mock Kafka on free loopback ports, for
# the demo and the benchmarks.  Source it; it defines:
#   ps_free_port                    print a free TCP port on 127.0.0.1
#   ps_start_redis DIR              start redis-server (no persistence) in
#                                   DIR; sets REDIS_PORT, REDIS_PID
#   ps_start_broker BIN DIR SPEC    start `BIN broker --topic SPEC`; sets
#                                   BOOTSTRAP, BROKER_PID
# Both start functions wait until the server answers and return non-zero
# (after printing its log) if it does not.  Stopping is the caller's job
# (kill "$REDIS_PID" "$BROKER_PID" in an EXIT trap).

ps_free_port() {
    local p
    for _ in $(seq 200); do
        p=$(( (RANDOM % 20000) + 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "servers.sh: no free port found" >&2
    return 1
}

ps_start_redis() {
    local dir=$1
    REDIS_PORT=$(ps_free_port) || return 1
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "servers.sh: redis-server did not start:" >&2
    cat "$dir/redis.log" >&2
    return 1
}

ps_start_broker() {
    local bin=$1 dir=$2 spec=$3
    "$bin" broker --brokers 1 --topic "$spec" \
        >"$dir/broker.out" 2>"$dir/broker.err" &
    BROKER_PID=$!
    BOOTSTRAP=""
    for _ in $(seq 150); do
        BOOTSTRAP=$(head -n1 "$dir/broker.out" 2>/dev/null || true)
        [ -n "$BOOTSTRAP" ] && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "servers.sh: propstream broker did not start:" >&2
    cat "$dir/broker.err" >&2
    return 1
}
