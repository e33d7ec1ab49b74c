#!/usr/bin/env bash
# test_options.sh -- every documented option of every subcommand, checked
# against the binary.
#
#   test_options.sh PROPSTREAM_BIN SOURCE_DIR
#
# The options are read from `propstream COMMAND --help-reference` (the
# Markdown that docs/configuration.md is made of), so the test follows the
# option tables and needs no list of its own.  For each option:
#   (a) a valid value is accepted and --print-config prints it back;
#   (b) every invalid kind that applies to its type exits 2 with a message
#       naming the option: below the minimum and above the maximum
#       (integer, number), not a number, a fraction for an integer, nan and
#       inf (number), not a boolean, an empty value, an empty list item, a
#       value outside its choices;
# for a sample of options the same through the environment variable and
# the config file; an unknown option, flag, file key and -X key exit 2.
#   (c) docs/configuration.md equals deploy/gen-config-docs.sh's output;
#   (d) secrets (secret options, kafka.sasl.password, redis.password, ...)
#       never appear in --print-config output nor in the stderr of a
#       failed start (bad option, unreachable Redis, wrong password, and,
#       when redis-server is installed, Kafka unreachable after Redis).
set -uo pipefail

bin=${1:?usage: test_options.sh PROPSTREAM_BIN SOURCE_DIR}
src=${2:?usage: test_options.sh PROPSTREAM_BIN SOURCE_DIR}
tmp=$(mktemp -d)
redis_pid=
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
# Options must come from this test only.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(PROPSTREAM_[A-Z0-9_]*\)=.*/\1/p')

failures=0 checks=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run ENVSPEC... -- ARGS: runs the binary with extra environment, stdout in
# $tmp/out, stderr in $tmp/err, status in $rc.
run() {
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  checks=$((checks + 1))
  env "${envs[@]}" "$bin" "$@" > "$tmp/out" 2> "$tmp/err"
  rc=$?
}

# expect_reject WHAT NEEDLE ENV... -- ARGS: exit 2 and NEEDLE in stderr.
expect_reject() {
  local what=$1 needle=$2
  shift 2
  run "$@"
  if [ "$rc" -ne 2 ]; then
    fail "$what: exit $rc, want 2 ($(head -c 200 "$tmp/err"))"
  elif ! grep -qF -- "$needle" "$tmp/err"; then
    fail "$what: message does not name '$needle': $(head -c 200 "$tmp/err")"
  fi
}

# expect_printed WHAT KEY WANT TYPE ENV... -- ARGS: exit 0 and
# --print-config shows KEY = WANT (numbers compared as numbers).
expect_printed() {
  local what=$1 key=$2 want=$3 type=$4 got
  shift 4
  run "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$what: exit $rc, want 0 ($(head -c 200 "$tmp/err"))"
    return
  fi
  got=$(sed -n "s/^$key = //p" "$tmp/out")
  if [ "$type" = number ]; then
    awk -v a="$got" -v b="$want" 'BEGIN { exit !(a != "" && a + 0 == b + 0) }' ||
      fail "$what: printed '$key = $got', want $want"
  elif [ "$got" != "$want" ]; then
    fail "$what: printed '$key = $got', want '$want'"
  fi
}

# ------------------------------------------------------------- commands
commands=$("$bin" --help | awk '/^commands:/ {on = 1; next}
                                 on && /^  [a-z]/ {print $1}')
[ -n "$commands" ] || { echo "FAIL: no commands in '$bin --help'" >&2; exit 1; }
for must in run gen import broker; do
  grep -qx "$must" <<< "$commands" || fail "'$must' missing from propstream --help"
done

# The rows of a --help-reference table as fields separated by \037 (not a
# tab: read would merge empty fields): key, short,
# env, type, default, unit, valid, description (backticks dropped from the
# first six; "\|" inside a cell kept as "|").
rows() {
  "$bin" "$1" --help-reference |
    awk '/^\| `/ {
           gsub(/\\\|/, "\001")
           n = split($0, f, / \| /)
           f[1] = substr(f[1], 3); sub(/ \|$/, "", f[n])
           for (i = 1; i <= n; i++) {
             gsub(/\001/, "|", f[i])
             if (i <= 6) gsub(/`/, "", f[i])
             printf "%s%s", f[i], (i < n ? "\037" : "\n")
           }
         }'
}

# Numbers a little outside [min, max].
below() { awk -v m="$1" 'BEGIN { printf "%.17g\n", m - 1 }'; }
above() { awk -v m="$1" 'BEGIN { printf "%.17g\n", m + (m > 1e6 ? m / 1e6 : 1) }'; }

for cmd in $commands; do
  "$bin" "$cmd" --help-reference > "$tmp/ref" 2> "$tmp/err"
  if [ $? -ne 0 ] || ! grep -q "^## propstream $cmd\$" "$tmp/ref"; then
    fail "$cmd --help-reference: exit status or heading"
    continue
  fi
  rows "$cmd" > "$tmp/rows"
  [ -s "$tmp/rows" ] || { fail "$cmd: no option rows in --help-reference"; continue; }
  "$bin" "$cmd" --help > "$tmp/help" 2>&1 || fail "$cmd --help: exit $?"

  # Required options get a valid value in every invocation.
  base=()
  while IFS=$'\037' read -r key _ _ type def _; do
    [ "$def" = "**required**" ] || continue
    case $type in
      integer|number) base+=("--$key=1") ;;
      *) base+=("--$key=required-value") ;;
    esac
  done < "$tmp/rows"

  sampled_types=" "
  while IFS=$'\037' read -r key short envname type def _unit valid desc; do
    what="$cmd --$key"
    # the required values, except this option's own
    own=()
    for a in "${base[@]}"; do [[ $a == "--$key="* ]] || own+=("$a"); done
    grep -qF -- "--$key" "$tmp/help" || fail "$what: missing from --help"
    [ "$envname" = "PROPSTREAM_$(tr 'a-z.-' 'A-Z__' <<< "$key")" ] ||
      fail "$what: environment variable '$envname'"
    secret=0
    [[ $desc == *"**secret**"* ]] && secret=1
    lo='' hi='' choices=()
    if [[ $valid =~ ^([-+0-9.e]+)\ \.\.\ ([-+0-9.e]+)$ ]]; then
      lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
    fi
    if [[ $valid == *"one of "* ]]; then
      read -r -a choices <<< "$(grep -o '`[^`]*`' <<< "${valid#*one of }" | tr -d '`' | tr '\n' ' ')"
    fi

    # (a) a valid value, printed back
    case $type in
      integer)
        [ -n "$lo" ] && good=$hi || good=7
        [ "$good" = "$def" ] && good=$lo ;;
      number)
        [ -n "$lo" ] && good=$hi || good=0.25
        [ "$good" = "$def" ] && good=$lo ;;
      boolean)
        [ "$def" = true ] && good=false || good=true ;;
      list)
        if [ ${#choices[@]} -gt 0 ]; then
          good=${choices[${#choices[@]}-1]}
        else
          good="item-a,item-b"
        fi ;;
      text)
        if [ ${#choices[@]} -gt 0 ]; then
          good=${choices[${#choices[@]}-1]}
        else
          good="value-$key"
        fi ;;
      *) fail "$what: unknown type '$type'"; continue ;;
    esac
    want=$good
    [ $secret = 1 ] && want='********'
    if [ "$key" = print-config ]; then
      run -- "$cmd" "${own[@]}" "--$key=true"
      [ "$rc" -eq 0 ] || fail "$what=true: exit $rc"
    else
      expect_printed "$what $good" "$key" "$want" "$type" -- \
        "$cmd" "${own[@]}" "--$key=$good" --print-config
      if [ -n "$short" ] && [ "$type" != boolean ]; then
        expect_printed "$cmd $short $good" "$key" "$want" "$type" -- \
          "$cmd" "${own[@]}" "$short" "$good" --print-config
      fi
    fi
    if [ $secret = 1 ] && grep -qF -- "$good" "$tmp/out"; then
      fail "$what: secret value printed by --print-config"
    fi

    # (b) every invalid kind for this type
    bad=()
    case $type in
      integer)
        if [ -n "$lo" ]; then bad+=("$(below "$lo")" "$(above "$hi")"); fi
        bad+=(abc 1.5 12abc "") ;;
      number)
        if [ -n "$lo" ]; then bad+=("$(below "$lo")" "$(above "$hi")"); fi
        bad+=(abc nan inf -inf 1e999 "") ;;
      boolean) bad+=(maybe 2 "") ;;
      list) bad+=("" "a,,b" ",") ;;
      text) [[ $valid == "any text" ]] || bad+=("") ;;
    esac
    if [ ${#choices[@]} -gt 0 ]; then bad+=("no-such-choice"); fi
    for b in "${bad[@]}"; do
      expect_reject "$what='$b'" "--$key" -- "$cmd" "${own[@]}" "--$key=$b" --print-config
    done
    # the separate-argument form of a value that looks like a flag
    if [ -n "$lo" ]; then
      expect_reject "$what $(below "$lo") (two arguments)" "--$key" -- \
        "$cmd" "${own[@]}" "--$key" "$(below "$lo")" --print-config
    fi

    # The environment and the config file, for the first option of each
    # type and every secret.
    if [[ $sampled_types != *" $type "* || $secret = 1 ]] && [ "$key" != print-config ]; then
      sampled_types+="$type "
      expect_printed "$envname=$good" "$key" "$want" "$type" "$envname=$good" -- \
        "$cmd" "${own[@]}" --print-config
      printf '# sample\n%s = %s\n' "$key" "$good" > "$tmp/good.conf"
      expect_printed "file: $key = $good" "$key" "$want" "$type" -- \
        "$cmd" "${own[@]}" -c "$tmp/good.conf" --print-config
      # flags beat the environment, which beats the file
      if [ "$type" = integer ] && [ -n "$lo" ] && [ "$lo" != "$hi" ]; then
        printf '%s = %s\n' "$key" "$hi" > "$tmp/prec.conf"
        expect_printed "precedence env > file" "$key" "$lo" integer "$envname=$lo" -- \
          "$cmd" "${own[@]}" -c "$tmp/prec.conf" --print-config
        expect_printed "precedence flag > env" "$key" "$hi" integer "$envname=$lo" -- \
          "$cmd" "${own[@]}" -c "$tmp/prec.conf" "--$key=$hi" --print-config
      fi
      if [ ${#bad[@]} -gt 0 ]; then
        b=${bad[0]}
        expect_reject "$envname='$b'" "$envname" "$envname=$b" -- \
          "$cmd" "${own[@]}" --print-config
        printf '\n%s = %s\n' "$key" "$b" > "$tmp/bad.conf"
        expect_reject "file: $key = '$b'" "$tmp/bad.conf:2: $key" -- \
          "$cmd" "${own[@]}" -c "$tmp/bad.conf" --print-config
      fi
    fi
  done < "$tmp/rows"

  # unknown options, file keys, -X keys; a missing value; a missing file
  expect_reject "$cmd unknown option" "--no-such-option" -- \
    "$cmd" "${base[@]}" --no-such-option 1 --print-config
  printf 'no-such-key = 1\n' > "$tmp/unknown.conf"
  expect_reject "$cmd unknown file key" "unknown key 'no-such-key'" -- \
    "$cmd" "${base[@]}" -c "$tmp/unknown.conf" --print-config
  expect_reject "$cmd -X other.key" "-X other.key" -- \
    "$cmd" "${base[@]}" -X other.key=1 --print-config
  expect_reject "$cmd -c without FILE" "-c" -- "$cmd" "${base[@]}" -c
  expect_reject "$cmd missing config file" "$tmp/none.conf" -- \
    "$cmd" "${base[@]}" -c "$tmp/none.conf" --print-config
  first_int=$(awk -F'\037' '$4 == "integer" {print $1; exit}' "$tmp/rows")
  if [ -n "$first_int" ]; then
    expect_reject "$cmd --$first_int without value" "--$first_int needs a value" -- \
      "$cmd" "${base[@]}" "--$first_int"
  fi
  # required options: named when missing
  while IFS=$'\037' read -r key _ envname _ def _; do
    [ "$def" = "**required**" ] || continue
    expect_reject "$cmd without --$key" "--$key" -- "$cmd" --print-config
  done < "$tmp/rows"
  # --print-config output is a config file that -c reads back
  run -- "$cmd" "${base[@]}" -X kafka.linger.ms=5 --print-config
  cp "$tmp/out" "$tmp/printed.conf"
  run -- "$cmd" -c "$tmp/printed.conf" --print-config
  if [ "$rc" -ne 0 ] || ! cmp -s "$tmp/out" "$tmp/printed.conf"; then
    fail "$cmd: --print-config output does not read back with -c (exit $rc)"
  fi
done

# Several config files apply in order; PROPSTREAM_CONFIG when none given.
printf 'group = from-first\nbatch-max = 7\n' > "$tmp/first.conf"
printf 'group = from-second\n' > "$tmp/second.conf"
expect_printed "-c A -c B: B wins" group from-second text -- \
  run -b x:1 -c "$tmp/first.conf" --config "$tmp/second.conf" --print-config
expect_printed "-c A -c B: A kept" batch-max 7 integer -- \
  run -b x:1 -c "$tmp/first.conf" --config="$tmp/second.conf" --print-config
expect_printed "PROPSTREAM_CONFIG" group from-first text PROPSTREAM_CONFIG="$tmp/first.conf" -- \
  run -b x:1 --print-config
expect_printed "-c beats PROPSTREAM_CONFIG" group from-second text \
  PROPSTREAM_CONFIG="$tmp/first.conf" -- run -b x:1 -c "$tmp/second.conf" --print-config

# ------------------------------------------------ (c) docs are generated
if ! bash "$src/deploy/gen-config-docs.sh" --stdout "$bin" > "$tmp/configuration.md"; then
  fail "deploy/gen-config-docs.sh failed"
elif ! diff -u "$src/docs/configuration.md" "$tmp/configuration.md" > "$tmp/doc.diff"; then
  fail "docs/configuration.md is stale: run deploy/gen-config-docs.sh"
  head -40 "$tmp/doc.diff" >&2
fi

# ------------------------------------------------------------ (d) secrets
S1=hunter2-redis-pw S2=swordfish-sasl-pw S3=redis-pass-through-pw
S4=ssl-key-pw-secret S5=oauth-client-secret-x
secret_args=(--redis-password "$S1" -X "kafka.sasl.password=$S2"
             -X "redis.password=$S3" -X "kafka.ssl.key.password=$S4"
             -X "kafka.sasl.oauthbearer.client.secret=$S5")
no_secrets() { # WHAT FILE...
  local what=$1 s
  shift
  for s in "$S1" "$S2" "$S3" "$S4" "$S5"; do
    if grep -qF -- "$s" "$@"; then fail "$what: secret '$s' leaked"; fi
  done
}
run -- run -b 127.0.0.1:1 "${secret_args[@]}" --print-config
[ "$rc" -eq 0 ] || fail "print-config with secrets: exit $rc"
no_secrets "run --print-config" "$tmp/out" "$tmp/err"
for k in redis-password kafka.sasl.password redis.password \
         kafka.ssl.key.password kafka.sasl.oauthbearer.client.secret; do
  grep -qxF "$k = ********" "$tmp/out" || fail "print-config: '$k = ********' missing"
done
# the environment and the file
printf 'bootstrap = 127.0.0.1:1\nredis-password = %s\nkafka.sasl.password = %s\n' \
  "$S1" "$S2" > "$tmp/secret.conf"
chmod 600 "$tmp/secret.conf"
run -- run -c "$tmp/secret.conf" --print-config
no_secrets "run -c FILE --print-config" "$tmp/out" "$tmp/err"
run PROPSTREAM_REDIS_PASSWORD="$S1" -- run -b 127.0.0.1:1 --print-config
no_secrets "PROPSTREAM_REDIS_PASSWORD --print-config" "$tmp/out" "$tmp/err"
grep -qxF 'redis-password = ********' "$tmp/out" || fail "env secret not shown masked"
# every other subcommand masks pass-through secrets too
for cmd in $commands; do
  [ "$cmd" = run ] && continue
  run -- "$cmd" -X "kafka.sasl.password=$S2" -X "redis.password=$S3" --print-config
  no_secrets "$cmd --print-config" "$tmp/out" "$tmp/err"
done
# failed starts: a bad option, a malformed file line holding a password
run -- run -b 127.0.0.1:1 "${secret_args[@]}" --flush-interval-ms 0
[ "$rc" -eq 2 ] || fail "bad option with secrets: exit $rc"
no_secrets "bad option" "$tmp/out" "$tmp/err"
printf 'bootstrap = 127.0.0.1:1\nredis-password %s\n' "$S1" > "$tmp/broken.conf"
expect_reject "malformed file line" "broken.conf:2" -- run -c "$tmp/broken.conf"
no_secrets "malformed file line" "$tmp/err"
run -- run -b 127.0.0.1:1 --redis-password "" -X "kafka.sasl.password=$S2"
[ "$rc" -eq 2 ] || fail "empty --redis-password: exit $rc"
no_secrets "empty --redis-password" "$tmp/err"

# A port with nothing listening.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo 1
}
closed=$(free_port)
run -- run -b "127.0.0.1:$closed" --redis "127.0.0.1:$closed" \
  --redis-timeout-ms 200 --kafka-timeout-ms 200 --stats-interval-s 0 \
  --redis-user propstream "${secret_args[@]}"
[ "$rc" -ne 0 ] || fail "start against nothing: exit 0"
no_secrets "Redis unreachable" "$tmp/out" "$tmp/err"

if command -v redis-server > /dev/null; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --requirepass right-password-xyz --dir "$tmp" > "$tmp/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    (exec 3<> "/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break
    sleep 0.05
  done
  # wrong password: AUTH fails
  run -- run -b "127.0.0.1:$closed" --redis "127.0.0.1:$rport" \
    --redis-timeout-ms 500 --kafka-timeout-ms 200 --stats-interval-s 0 \
    "${secret_args[@]}"
  [ "$rc" -ne 0 ] || fail "wrong Redis password: exit 0"
  grep -qi "auth" "$tmp/err" || fail "wrong Redis password: no AUTH error: $(head -c 200 "$tmp/err")"
  no_secrets "wrong Redis password" "$tmp/out" "$tmp/err"
  # right password, Kafka with SASL settings unreachable
  run -- run -b "127.0.0.1:$closed" --redis "127.0.0.1:$rport" \
    --redis-timeout-ms 500 --kafka-timeout-ms 300 --stats-interval-s 0 \
    --prefix "opt-test:" --redis-password right-password-xyz \
    -X kafka.security.protocol=SASL_PLAINTEXT -X kafka.sasl.mechanism=PLAIN \
    -X kafka.sasl.username=u -X "kafka.sasl.password=$S2" \
    -X "kafka.ssl.key.password=$S4"
  [ "$rc" -ne 0 ] || fail "Kafka unreachable: exit 0"
  no_secrets "Kafka unreachable" "$tmp/out" "$tmp/err"
  grep -qF right-password-xyz "$tmp/err" && fail "Kafka unreachable: Redis password leaked"
else
  echo "note: redis-server not installed; AUTH and Kafka failure cases skipped" >&2
fi

echo "test_options: $checks invocations, $failures failures"
[ "$failures" -eq 0 ]
