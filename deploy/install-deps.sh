#!/usr/bin/env bash
# Install propstream's build and run dependencies from Debian packages.
# A no-op when everything is already installed.  Needs root (or sudo) only
# when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config   # toolchain
  librdkafka-dev                     # Kafka client, and its mock cluster
  libavro-dev                        # Avro decoding, schema resolution
  libhiredis-dev                     # Redis client
  libjansson-dev                     # JSON events
  libgsl-dev                         # Beta quantiles and distributions
  libcmocka-dev                      # unit tests
  valgrind                           # the suite's leak checks (label valgrind)
  redis-server redis-tools           # Redis for the demo and the tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
