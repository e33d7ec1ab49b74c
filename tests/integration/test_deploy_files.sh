#!/usr/bin/env bash
# test_deploy_files.sh -- the files of deploy/ are checked here, as far as
# this machine can check them (there is no Docker engine in CI):
#
#   test_deploy_files.sh PROPSTREAM_BIN SOURCE_DIR
#
#   1. docker-compose.yml parses as YAML and has the services, healthchecks
#      and start conditions the deployment relies on (python3 + PyYAML);
#   2. the Dockerfile is multi-stage on debian:12, runs as a non-root user,
#      and every package it installs exists in this Debian's apt index;
#   3. `systemd-analyze verify` accepts propstream.service (a copy whose
#      ExecStart names the built binary);
#   4. `propstream run -c propstream.conf.example --print-config` exits 0,
#      also with a second (secrets) file, secrets masked;
#   5. the Redis ACL rule of the compose file is enough for propstream:
#      Redis started with exactly that rule, events from the mock broker,
#      `propstream run` as the ACL user exits 0 with no ACL denial logged;
#      docs/deployment.md shows the same rule;
#   6. fetch-schemas.sh against a fake Schema Registry (ids, a subject,
#      basic auth, errors).
# A part whose tool is missing (python3/PyYAML, apt-cache, systemd-analyze,
# redis-server) is skipped with a message; the others still run.
set -uo pipefail

bin=${1:?usage: test_deploy_files.sh PROPSTREAM_BIN SOURCE_DIR}
src=${2:?usage: test_deploy_files.sh PROPSTREAM_BIN SOURCE_DIR}
deploy=$src/deploy
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(PROPSTREAM_[A-Z0-9_]*\)=.*/\1/p')

# shellcheck source=../../deploy/servers.sh
. "$deploy/servers.sh"   # ps_free_port, ps_start_broker

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
skip() { echo "SKIP: $*" >&2; }
have_yaml=0
command -v python3 > /dev/null && python3 -c 'import yaml' 2> /dev/null && have_yaml=1

for f in docker-compose.yml Dockerfile propstream.service propstream.conf.example \
         fetch-schemas.sh gen-config-docs.sh compose.env.example; do
  [ -f "$deploy/$f" ] || fail "deploy/$f is missing"
done
for f in fetch-schemas.sh gen-config-docs.sh; do
  [ -x "$deploy/$f" ] || fail "deploy/$f is not executable"
  bash -n "$deploy/$f" || fail "deploy/$f: shell syntax"
done
[ -f "$src/docs/deployment.md" ] || fail "docs/deployment.md is missing"

# ------------------------------------------------------- 1. compose file
if [ $have_yaml = 1 ]; then
  python3 - "$deploy/docker-compose.yml" "$deploy" > "$tmp/compose.out" 2>&1 <<'EOF' || { fail "docker-compose.yml:"; cat "$tmp/compose.out" >&2; }
import os, sys, yaml
path, deploy = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(path))
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)
svc = doc.get("services") or {}
for name in ("kafka", "kafka-init", "redis", "propstream"):
    check(name in svc, "service %s missing" % name)
for name in ("kafka", "redis"):
    hc = (svc.get(name) or {}).get("healthcheck") or {}
    check(hc.get("test"), "%s has no healthcheck" % name)
k = svc.get("kafka", {})
env = k.get("environment") or {}
check("apache/kafka" in k.get("image", ""), "kafka: not the apache/kafka image")
roles = str(env.get("KAFKA_PROCESS_ROLES", "")).replace(" ", "")
check(set(roles.split(",")) == {"broker", "controller"},
      "kafka: KAFKA_PROCESS_ROLES should be broker,controller (KRaft combined)")
for key in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS",
            "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_LISTENERS",
            "KAFKA_ADVERTISED_LISTENERS", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "KAFKA_INTER_BROKER_LISTENER_NAME", "CLUSTER_ID",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"):
    check(key in env, "kafka: %s missing" % key)
ctl = str(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", ""))
check(ctl + "://" in str(env.get("KAFKA_LISTENERS", "")),
      "kafka: the controller listener is not in KAFKA_LISTENERS")
check(ctl + "://" not in str(env.get("KAFKA_ADVERTISED_LISTENERS", "")),
      "kafka: the controller listener must not be advertised")
voters = str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", ""))
check(voters.startswith(str(env.get("KAFKA_NODE_ID")) + "@"),
      "kafka: the quorum voter is not this node")
listeners = {l.split("://")[0] for l in str(env.get("KAFKA_LISTENERS", "")).split(",")}
protomap = {p.split(":")[0] for p in str(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",")}
check(listeners <= protomap, "kafka: a listener has no security protocol")
check(str(env.get("KAFKA_INTER_BROKER_LISTENER_NAME")) in listeners,
      "kafka: the inter-broker listener is not a listener")
init = svc.get("kafka-init", {})
cmd = " ".join(init.get("command") or []) if isinstance(init.get("command"), list) else str(init.get("command"))
check("--create" in cmd and "--partitions" in cmd, "kafka-init does not create topics with partitions")
check(init.get("restart") in ("no", None), "kafka-init must not restart")
check((init.get("depends_on") or {}).get("kafka", {}).get("condition") == "service_healthy",
      "kafka-init must wait for kafka to be healthy")
r = svc.get("redis", {})
rcmd = " ".join(r.get("command") or [])
check("--appendonly yes" in rcmd, "redis: no AOF persistence")
check("--requirepass" in rcmd or "--aclfile" in rcmd, "redis: no password")
check("--user propstream" in rcmd, "redis: no ACL user for propstream")
check(any(v.get("target") == "/data" if isinstance(v, dict)
          else str(v).split(":")[1:2] == ["/data"]
          for v in r.get("volumes") or []), "redis: /data is not a volume")
p = svc.get("propstream", {})
b = p.get("build") or {}
check(os.path.isfile(os.path.join(deploy, b.get("context", "."), b.get("dockerfile", "Dockerfile"))),
      "propstream: the build's Dockerfile does not exist")
dep = p.get("depends_on") or {}
want = {"kafka": "service_healthy", "redis": "service_healthy",
        "kafka-init": "service_completed_successfully"}
for name, cond in want.items():
    check((dep.get(name) or {}).get("condition") == cond,
          "propstream must depend on %s with %s" % (name, cond))
for v in p.get("volumes") or []:
    hostpath = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
    if hostpath.startswith("."):
        check(os.path.exists(os.path.join(deploy, hostpath)),
              "propstream: mounted %s does not exist" % hostpath)
penv = p.get("environment") or {}
for key in penv:
    check(key.startswith("PROPSTREAM_"), "propstream: unexpected variable %s" % key)
check(str(penv.get("PROPSTREAM_BOOTSTRAP", "")).startswith("kafka:"),
      "propstream: PROPSTREAM_BOOTSTRAP should be the in-network listener")
check(p.get("stop_grace_period"), "propstream: no stop_grace_period for the final flush")
if errors:
    sys.exit("\n".join(errors))
EOF
  # The compose's Redis ACL rule (the tokens after --user propstream).
  python3 - "$deploy/docker-compose.yml" > "$tmp/acl_rule" <<'EOF' || fail "cannot read the Redis ACL rule"
import shlex, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
cmd = doc["services"]["redis"]["command"]
script = cmd[-1].replace("$$", "$")
words = shlex.split(script)
i = words.index("--user")
rule = []
for w in words[i + 2:]:
    if w.startswith("--"):
        break
    rule.append(w)
print("\n".join(rule))
EOF
else
  skip "python3 with PyYAML is not installed: docker-compose.yml not parsed"
fi
grep -q $'\t' "$deploy/docker-compose.yml" && fail "docker-compose.yml contains a tab"

# ----------------------------------------------------------- 2. Dockerfile
df=$deploy/Dockerfile
[ "$(grep -c '^FROM debian:12' "$df")" -ge 2 ] || fail "Dockerfile: want two stages FROM debian:12"
grep -q '^FROM debian:12 AS build' "$df" || fail "Dockerfile: no build stage"
grep -q '^COPY --from=build' "$df" || fail "Dockerfile: runtime does not copy from the build stage"
user=$(awk '/^USER/ {u = $2} END {print u}' "$df")
[ -n "$user" ] && [ "${user%%:*}" != root ] && [ "${user%%:*}" != 0 ] ||
  fail "Dockerfile: the final USER is not a non-root user"
grep -q '^ENTRYPOINT .*propstream' "$df" || fail "Dockerfile: ENTRYPOINT is not propstream"
# The packages of stage N's apt-get install: the lines after the install
# command up to the next "&& ...".
stage_pkgs() {
  awk -v want="$1" '/^FROM/ {s++}
    s == want && /apt-get install/ {on = 1; next}
    on && /^[[:space:]]*&&/ {on = 0}
    on {gsub(/\\/, ""); print}' "$df" |
    tr -s ' \t' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]*$' | sort -u
}
build_pkgs=$(stage_pkgs 1)
run_pkgs=$(stage_pkgs 2)
[ -n "$build_pkgs" ] || fail "Dockerfile: no packages found in the build stage"
grep -qx librdkafka1 <<< "$run_pkgs" || fail "Dockerfile: runtime stage lacks librdkafka1"
for dev in $(grep -oE 'lib[a-z0-9]+-dev' "$deploy/install-deps.sh" | grep -v cmocka | sort -u); do
  grep -qx "$dev" <<< "$build_pkgs" || fail "Dockerfile: build stage lacks $dev (deploy/install-deps.sh)"
done
if command -v apt-cache > /dev/null && apt-cache show libc6 > /dev/null 2>&1; then
  # shellcheck disable=SC2086 # one call for all: apt-cache is slow to start
  known=$(apt-cache show --no-all-versions $build_pkgs $run_pkgs 2> /dev/null |
          sed -n 's/^Package: //p' | sort -u)
  for p in $build_pkgs $run_pkgs; do
    grep -qx "$p" <<< "$known" || fail "Dockerfile: package $p is not in this Debian's apt index"
  done
  # The runtime stage has every shared library the binary needs.
  if command -v ldd > /dev/null && command -v dpkg-query > /dev/null; then
    for path in $(ldd "$bin" | awk '$3 ~ /^\// {print $3}'); do
      lib=${path##*/}
      # usrmerge: dpkg may know the file under /usr/lib or /lib
      owner=$(dpkg -S "$path" "/usr${path#/usr}" "${path#/usr}" 2> /dev/null |
              head -n1 | cut -d: -f1)
      [ -n "$owner" ] || continue
      case $owner in
        # pulled in by the packages above, or the sanitizers of a PS_SANITIZE build
        libc6|libgcc-s1|libstdc++6|zlib1g|liblzma5|libzstd1|liblz4-1|libssl3|libsasl2-2|libsnappy1v5) continue ;;
        libasan*|libubsan*|liblsan*|libtsan*) continue ;;
      esac
      grep -qx "$owner" <<< "$run_pkgs" || fail "Dockerfile: runtime lacks $owner (for $lib)"
    done
  fi
else
  skip "apt-cache unusable: Dockerfile package names not checked"
fi

# ------------------------------------------------------------ 3. systemd
unit=$deploy/propstream.service
for k in 'DynamicUser=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
         'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'MemoryDenyWriteExecute=yes' \
         'SystemCallFilter=@system-service' 'Restart=on-failure' 'KillSignal=SIGTERM' \
         'LoadCredential=' 'RestrictAddressFamilies='; do
  grep -q "^$k" "$unit" || fail "propstream.service: no $k"
done
grep -q '^ExecStart=.* -c /etc/propstream/propstream.conf' "$unit" ||
  fail "propstream.service: ExecStart does not read /etc/propstream/propstream.conf"
if command -v systemd-analyze > /dev/null; then
  mkdir -p "$tmp/unit"
  sed "s#/usr/local/bin/propstream#$bin#g" "$unit" > "$tmp/unit/propstream.service"
  if ! SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/unit/propstream.service" > "$tmp/verify.out" 2>&1; then
    fail "systemd-analyze verify propstream.service:"
    cat "$tmp/verify.out" >&2
  elif grep -v 'Failed to connect\|not running in a container\|Failed to open' "$tmp/verify.out" | grep -q 'propstream.service'; then
    fail "systemd-analyze verify warns:"
    cat "$tmp/verify.out" >&2
  fi
else
  skip "systemd-analyze is not installed: propstream.service not verified"
fi

# ----------------------------------------------------- 4. example config
conf=$deploy/propstream.conf.example
if ! "$bin" run -c "$conf" --print-config > "$tmp/conf.out" 2> "$tmp/conf.err"; then
  fail "propstream run -c propstream.conf.example --print-config: $(cat "$tmp/conf.err")"
fi
grep -q '^bootstrap = ' "$tmp/conf.out" || fail "example config: no bootstrap"
grep -q '^redis-user = propstream$' "$tmp/conf.out" || fail "example config: redis-user"
# with the secrets file the systemd unit loads as a second config file
printf 'redis-password = s3cret-redis\nkafka.sasl.password = s3cret-kafka\n' > "$tmp/secrets.conf"
if ! "$bin" run -c "$conf" -c "$tmp/secrets.conf" --print-config > "$tmp/conf.out" 2>&1; then
  fail "example config + secrets file: $(cat "$tmp/conf.out")"
fi
grep -q 's3cret' "$tmp/conf.out" && fail "example config + secrets: a secret was printed"
grep -qx 'redis-password = \*\*\*\*\*\*\*\*' "$tmp/conf.out" || fail "secrets file: redis-password not applied"
# the commented examples, uncommented, are valid too
sed -n 's/^# \(kafka\.[a-z.]* = [^(]*\)$/\1/p' "$conf" | sort -u > "$tmp/kafka.conf"
[ -s "$tmp/kafka.conf" ] || fail "example config: no commented kafka.* examples"
"$bin" run -c "$conf" -c "$tmp/kafka.conf" --print-config > /dev/null 2> "$tmp/conf.err" ||
  fail "example config: the kafka.* examples do not parse: $(cat "$tmp/conf.err")"

# --------------------------------------------- 5. the Redis ACL, for real
if [ -s "$tmp/acl_rule" ] && command -v redis-server > /dev/null && command -v redis-cli > /dev/null; then
  # docs/deployment.md shows the same commands
  doc_rule=$(grep -m1 '^user propstream ' "$src/docs/deployment.md" | tr ' ' '\n' | grep '^[+-]' | sort)
  comp_rule=$(grep '^[+-]' "$tmp/acl_rule" | sort)
  [ -n "$doc_rule" ] || fail "docs/deployment.md has no 'user propstream ...' ACL line"
  [ "$doc_rule" = "$comp_rule" ] || fail "docs/deployment.md's ACL commands differ from docker-compose.yml's: $(diff <(echo "$doc_rule") <(echo "$comp_rule") | tr '\n' ' ')"
  port=$(ps_free_port)
  mapfile -t rule < "$tmp/acl_rule"
  rule=("${rule[@]/#>*/>acl-test-pw}")   # the password: ours
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --requirepass admin-test-pw --user propstream "${rule[@]}" > "$tmp/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    REDISCLI_AUTH=admin-test-pw redis-cli -p "$port" ping 2> /dev/null | grep -q PONG && break
    sleep 0.05
  done
  if ! ps_start_broker "$bin" "$tmp" events:4; then
    fail "propstream broker did not start"
  else
    pids+=("$BROKER_PID")
    "$bin" gen -b "$BOOTSTRAP" -t events -n 300 --bad 0.02 --seed 7 --progress-s 0 \
      > "$tmp/gen.out" 2> "$tmp/gen.err" || fail "gen: $(tail -3 "$tmp/gen.err")"
    records=$(sed -n 's/.*"records":\([0-9]*\).*/\1/p' "$tmp/gen.out" | head -n1)
    # Run until every record is counted in Redis (or the count stops
    # moving), then stop it the way systemd and docker do (SIGTERM: final
    # flush, exit 0).
    PROPSTREAM_REDIS_PASSWORD=acl-test-pw "$bin" run -b "$BOOTSTRAP" -t events -g acl \
      -r "127.0.0.1:$port" --redis-user propstream --stats-interval-s 0 \
      > "$tmp/run.out" 2> "$tmp/run.err" &
    run_pid=$!
    n=0 last=0 still=0
    for _ in $(seq 300); do
      n=$(REDISCLI_AUTH=admin-test-pw redis-cli -p "$port" HGET ps:metrics events_in)
      n=${n:-0}
      [ -n "$records" ] && [ "$n" -ge "$records" ] 2> /dev/null && break
      if [ "$n" != 0 ] && [ "$n" = "$last" ]; then
        still=$((still + 1))
        [ $still -ge 20 ] && break
      else
        still=0
      fi
      last=$n
      kill -0 "$run_pid" 2> /dev/null || break
      sleep 0.1
    done
    kill -TERM "$run_pid" 2> /dev/null
    for _ in $(seq 150); do kill -0 "$run_pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$run_pid" 2> /dev/null && fail "run did not stop within 15 s of SIGTERM"
    wait "$run_pid"
    rc=$?
    [ "$rc" -eq 0 ] || fail "propstream run as the ACL user: exit $rc: $(tail -5 "$tmp/run.err")"
    [ "${n:-0}" -gt 0 ] 2> /dev/null ||
      fail "run as the ACL user: ps:metrics events_in '$n' of $records records"
    grep -qi 'noperm\|no permissions' "$tmp/run.err" && fail "run as the ACL user: $(grep -i -m3 'noperm\|no permissions' "$tmp/run.err")"
    denied=$(REDISCLI_AUTH=admin-test-pw redis-cli -p "$port" ACL LOG 10)
    [ -z "$denied" ] || fail "Redis ACL LOG after run: $(tr '\n' ' ' <<< "$denied" | head -c 600)"
    if "$bin" --help | grep -q '^  status '; then
      PROPSTREAM_REDIS_PASSWORD=acl-test-pw "$bin" status --once -r "127.0.0.1:$port" \
        --redis-user propstream > "$tmp/status.out" 2>&1 ||
        fail "status as the ACL user: $(tail -3 "$tmp/status.out")"
      denied=$(REDISCLI_AUTH=admin-test-pw redis-cli -p "$port" ACL LOG 10)
      [ -z "$denied" ] || fail "Redis ACL LOG after status: $(tr '\n' ' ' <<< "$denied" | head -c 600)"
    fi
  fi
else
  skip "redis-server or the compose ACL rule unavailable: the Redis ACL not exercised"
fi

# --------------------------------------------------- 6. fetch-schemas.sh
if command -v python3 > /dev/null && command -v curl > /dev/null; then
  sport=$(ps_free_port)
  python3 - "$sport" "$src/schemas/event.avsc" > "$tmp/registry.log" 2>&1 <<'EOF' &
import base64, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, avsc = int(sys.argv[1]), open(sys.argv[2]).read()
auth = "Basic " + base64.b64encode(b'sr-user:p"a\\ss word').decode()
protobuf = {"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";"}
routes = {
    "/schemas/ids/1": {"schema": avsc},
    "/schemas/ids/42": {"schema": avsc},
    "/schemas/ids/43": protobuf,
    "/subjects/events-value/versions": [1, 2],
    "/subjects/events-value/versions/1": {"subject": "events-value", "version": 1, "id": 7, "schema": avsc},
    "/subjects/events-value/versions/2": {"subject": "events-value", "version": 2, "id": 9, "schema": avsc},
}
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != auth:
            self.send_response(401); self.end_headers(); return
        body = routes.get(self.path)
        if body is None:
            self.send_response(404); self.end_headers()
            self.wfile.write(b'{"error_code":40403,"message":"Schema not found"}'); return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
  pids+=($!)
  # (python3 can take seconds to start on a loaded machine)
  up=0
  for _ in $(seq 400); do
    (exec 3<> "/dev/tcp/127.0.0.1/$sport") 2> /dev/null && { up=1; break; }
    sleep 0.05
  done
  [ "$up" = 1 ] || { cat "$tmp/registry.log" >&2; fail "fake Schema Registry did not start on port $sport"; }
  export SCHEMA_REGISTRY_USER=sr-user SCHEMA_REGISTRY_PASSWORD='p"a\ss word'
  fs=$deploy/fetch-schemas.sh
  if ! "$fs" -u "http://127.0.0.1:$sport/" -d "$tmp/schemas" 42 -s events-value > "$tmp/fs.out" 2>&1; then
    fail "fetch-schemas.sh: $(cat "$tmp/fs.out")"
  fi
  for id in 42 7 9; do
    python3 -c 'import json, sys; a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2])); sys.exit(a != b)' \
      "$tmp/schemas/$id.avsc" "$src/schemas/event.avsc" 2> /dev/null ||
      fail "fetch-schemas.sh: $id.avsc is not the registry's schema"
  done
  # propstream accepts the directory
  "$bin" run -b 127.0.0.1:1 --schema-dir "$tmp/schemas" --print-config > /dev/null ||
    fail "run --schema-dir with the fetched schemas"
  "$fs" -u "http://127.0.0.1:$sport" -d "$tmp/schemas" 404 > "$tmp/fs.out" 2>&1 &&
    fail "fetch-schemas.sh: a missing id exits 0"
  "$fs" -u "http://127.0.0.1:$sport" -d "$tmp/schemas" 43 > "$tmp/fs.out" 2>&1 &&
    fail "fetch-schemas.sh: a PROTOBUF schema exits 0"
  [ -e "$tmp/schemas/43.avsc" ] && fail "fetch-schemas.sh: wrote a PROTOBUF schema"
  SCHEMA_REGISTRY_PASSWORD=wrong "$fs" -u "http://127.0.0.1:$sport" -d "$tmp/schemas" 1 > "$tmp/fs.out" 2>&1 &&
    fail "fetch-schemas.sh: wrong credentials exit 0"
  "$fs" -d "$tmp/schemas" 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "fetch-schemas.sh without URL: want exit 2"
  "$fs" -u "http://127.0.0.1:$sport" x1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "fetch-schemas.sh bad id: want exit 2"
  leftovers=("$tmp"/schemas/.*.avsc.*)
  [ -e "${leftovers[0]}" ] && fail "fetch-schemas.sh left temporary files"
else
  skip "python3 or curl missing: fetch-schemas.sh not exercised"
fi

echo "test_deploy_files: $failures failures"
[ "$failures" -eq 0 ]
