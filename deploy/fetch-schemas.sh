#!/usr/bin/env bash
# fetch-schemas.sh -- copy Avro writer schemas from a Confluent-compatible
# Schema Registry into propstream's --schema-dir, as <id>.avsc.
#
# Confluent-framed messages carry a 4-byte schema id; propstream reads the
# writer schema of id N from SCHEMA_DIR/N.avsc (and resolves it against its
# reader schema, schemas/event.avsc).  This script fetches those files:
#
#   deploy/fetch-schemas.sh [options] [ID...]
#     -u, --url URL          registry URL (default $SCHEMA_REGISTRY_URL)
#     -d, --dir DIR          where to write (default $SCHEMA_DIR, else
#                            /var/lib/propstream/schemas)
#     -s, --subject SUBJECT  also every version of SUBJECT (repeatable),
#                            e.g. events-value (TopicNameStrategy)
#     -h, --help
#
#   Environment:
#     SCHEMA_REGISTRY_USER, SCHEMA_REGISTRY_PASSWORD
#                            HTTP basic auth (Confluent Cloud: API key and
#                            secret).  Given to curl on stdin, never on its
#                            command line.
#     SCHEMA_REGISTRY_CA     CA file for an https registry with a private CA
#     CURL_OPTS              extra curl options (e.g. "--proxy http://...")
#
# Examples:
#   SCHEMA_REGISTRY_URL=https://sr.example.internal:8081 \
#   SCHEMA_REGISTRY_USER=propstream SCHEMA_REGISTRY_PASSWORD=... \
#     deploy/fetch-schemas.sh -d /var/lib/propstream/schemas -s events-value
#   deploy/fetch-schemas.sh -u http://localhost:8081 -d ./schemas 1 7 12
#
# GET /schemas/ids/{id} and GET /subjects/{subject}/versions[/{v}] of the
# Schema Registry REST API; the "schema" field is written as is.  Files are
# replaced atomically.  Only AVRO schemas are accepted, and schemas with
# references (types defined in other subjects) are refused: propstream
# reads one self-contained file per id.
#
# propstream reads a schema file the first time it sees the id and
# remembers ids it could not find, so fetch new schemas before producers
# use them, or restart propstream after fetching.  Exit status: 0 when
# every requested schema was written, 1 otherwise, 2 on bad usage.
set -euo pipefail

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }

url=${SCHEMA_REGISTRY_URL:-}
dir=${SCHEMA_DIR:-/var/lib/propstream/schemas}
subjects=()
ids=()
while [ $# -gt 0 ]; do
  case $1 in
    -u|--url) url=${2:?--url needs a value}; shift 2 ;;
    --url=*) url=${1#*=}; shift ;;
    -d|--dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    -s|--subject) subjects+=("${2:?--subject needs a value}"); shift 2 ;;
    --subject=*) subjects+=("${1#*=}"); shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ids+=("$@"); break ;;
    -*) echo "fetch-schemas: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) ids+=("$1"); shift ;;
  esac
done
[ -n "$url" ] || { echo "fetch-schemas: no registry URL (-u URL or SCHEMA_REGISTRY_URL)" >&2; exit 2; }
[ ${#ids[@]} -gt 0 ] || [ ${#subjects[@]} -gt 0 ] ||
  { echo "fetch-schemas: give schema ids and/or --subject SUBJECT" >&2; exit 2; }
for id in "${ids[@]}"; do
  [[ $id =~ ^[0-9]+$ ]] && [ "$id" -le 2147483647 ] ||
    { echo "fetch-schemas: '$id' is not a schema id (0..2147483647)" >&2; exit 2; }
done
command -v curl > /dev/null || { echo "fetch-schemas: curl is not installed" >&2; exit 1; }
if command -v python3 > /dev/null; then
  json_tool=python3
elif command -v jq > /dev/null; then
  json_tool=jq
else
  echo "fetch-schemas: needs python3 or jq to read the registry's JSON" >&2
  exit 1
fi
url=${url%/}
mkdir -p "$dir"

# GET PATH: the response body on stdout; non-zero on any HTTP error.
get() {
  local opts=(-fsS --retry 3 --retry-delay 1 --connect-timeout 10 --max-time 60
              -H 'Accept: application/vnd.schemaregistry.v1+json, application/json')
  [ -n "${SCHEMA_REGISTRY_CA:-}" ] && opts+=(--cacert "$SCHEMA_REGISTRY_CA")
  # shellcheck disable=SC2206 # CURL_OPTS is split on purpose
  [ -n "${CURL_OPTS:-}" ] && opts+=($CURL_OPTS)
  if [ -n "${SCHEMA_REGISTRY_USER:-}" ]; then
    # curl reads "user = ..." from stdin (-K -): not visible in ps.
    local cred="${SCHEMA_REGISTRY_USER}:${SCHEMA_REGISTRY_PASSWORD:-}"
    cred=${cred//\\/\\\\}
    cred=${cred//\"/\\\"}
    printf 'user = "%s"\n' "$cred" | curl "${opts[@]}" -K - "$url$1"
  else
    curl "${opts[@]}" "$url$1" < /dev/null
  fi
}

# FIELD < JSON: one field of a JSON object ("" when absent); for "schema",
# check that it is an AVRO schema without references and that it parses.
field() {
  if [ "$json_tool" = python3 ]; then
    python3 -c '
import json, sys
doc = json.load(sys.stdin)
f = sys.argv[1]
if f == "schema":
    if doc.get("schemaType", "AVRO") != "AVRO":
        sys.exit("schemaType %s is not AVRO" % doc.get("schemaType"))
    if doc.get("references"):
        sys.exit("the schema has references, which propstream cannot resolve")
    json.loads(doc["schema"])
v = doc.get(f, "") if isinstance(doc, dict) else ""
print(v if isinstance(v, str) else json.dumps(v))
' "$1"
  else
    jq -er --arg f "$1" '
      if $f == "schema" then
        if (.schemaType // "AVRO") != "AVRO" then error("schemaType is not AVRO")
        elif ((.references // []) | length) > 0 then error("the schema has references")
        else (.schema | fromjson | tojson) end
      else (.[$f] // "") | if type == "string" then . else tojson end end'
  fi
}

# versions < JSON array: one version per line.
versions() {
  if [ "$json_tool" = python3 ]; then
    python3 -c 'import json, sys; print("\n".join(str(v) for v in json.load(sys.stdin)))'
  else
    jq -r '.[]'
  fi
}

failed=0
# save ID JSON WHAT: write the schema of a registry response to DIR/ID.avsc.
save() {
  local id=$1 body=$2 what=$3 tmp
  tmp=$(mktemp "$dir/.$id.avsc.XXXXXX")
  if ! field schema <<< "$body" > "$tmp" || [ ! -s "$tmp" ]; then
    rm -f "$tmp"
    echo "fetch-schemas: $what: no usable Avro schema" >&2
    failed=1
    return
  fi
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dir/$id.avsc"
  echo "fetch-schemas: $what -> $dir/$id.avsc"
}

for id in "${ids[@]}"; do
  if body=$(get "/schemas/ids/$id"); then
    save "$id" "$body" "schema id $id"
  else
    echo "fetch-schemas: GET $url/schemas/ids/$id failed" >&2
    failed=1
  fi
done

for subject in "${subjects[@]}"; do
  enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$subject" 2>/dev/null ||
        jq -rn --arg s "$subject" '$s | @uri')
  if ! list=$(get "/subjects/$enc/versions"); then
    echo "fetch-schemas: GET $url/subjects/$enc/versions failed" >&2
    failed=1
    continue
  fi
  for v in $(versions <<< "$list"); do
    if ! body=$(get "/subjects/$enc/versions/$v"); then
      echo "fetch-schemas: GET $url/subjects/$enc/versions/$v failed" >&2
      failed=1
      continue
    fi
    id=$(field id <<< "$body")
    if ! [[ $id =~ ^[0-9]+$ ]]; then
      echo "fetch-schemas: $subject version $v: no schema id in the response" >&2
      failed=1
      continue
    fi
    save "$id" "$body" "$subject version $v (id $id)"
  done
done
exit "$failed"
