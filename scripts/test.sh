#!/usr/bin/env bash
# scripts/test.sh — every test Ferry has, as CI runs it.
#
# Installs the real peers the tests talk to when they are missing (Debian
# packages; needs root, as on CI), runs go vet, then the whole suite with the
# race detector. Exits non-zero on any failure. Set CI=true to make tests
# that need a missing peer fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test suite drives, as "command:package".
peers=(
  mosquitto_pub:mosquitto-clients
  mosquitto_sub:mosquitto-clients
  kcat:kcat
  qemu-aarch64-static:qemu-user-static
  qemu-arm-static:qemu-user-static
  prlimit:util-linux
  unshare:util-linux
  ip:iproute2
  curl:curl
  git:git
  node:nodejs
  npm:npm
  socat:socat
  mmdebstrap:mmdebstrap
  dpkg-deb:dpkg
  qemu-system-x86_64:qemu-system-x86
  mke2fs:e2fsprogs
)

missing=() image_missing=()
for entry in "${peers[@]}"; do
  cmd=${entry%%:*} pkg=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# pymodbus, the Modbus slave the adapter tests read (devices/modbus/modbustest),
# loads with Debian's own interpreter.
/usr/bin/python3 -c 'import pymodbus' >/dev/null 2>&1 || missing+=(python3-pymodbus)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "test.sh: missing ${missing[*]} (not root: the tests that need them will skip outside CI)" >&2
  fi
fi

# mqtt.js, a real MQTT 5 peer (gateway/mqttjs_test.go), pinned by its package-lock.json.
if [ ! -d gateway/testdata/mqttjs/node_modules/mqtt ] && command -v npm >/dev/null 2>&1; then
  echo "test.sh: installing mqtt.js (npm ci)"
  npm ci --prefix gateway/testdata/mqttjs --no-audit --no-fund --loglevel=error
fi

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
echo "test.sh: go vet"
go vet ./...
echo "test.sh: go test -race"
go test -race -timeout 20m -count=1 ./...
echo "test.sh: cross-build for the Pi (linux/arm64, linux/arm)"
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -o /dev/null ./gateway
CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -o /dev/null ./gateway
# The Raspberry Pi image, built and booted under QEMU with a power cut: about
# 30 minutes on 2 cores (BENCHMARKS.md), beyond CI's budget, so on request and in
# the release procedure.
if [ -n "${FERRY_IMAGE_TEST:-}" ]; then
  for entry in mmdebstrap:mmdebstrap qemu-system-aarch64:qemu-system-arm mcopy:mtools mkfs.vfat:dosfstools \
      sfdisk:fdisk update-binfmts:binfmt-support xz:xz-utils; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || image_missing+=("${entry#*:}")
  done
  if ((${#image_missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${image_missing[@]}"
  fi
  echo "test.sh: the Raspberry Pi image (scripts/image.sh, scripts/image-test.sh)"
  image_out=$(mktemp -d)
  scripts/image.sh "$image_out"
  scripts/image-test.sh "$(ls "$image_out"/ferry-*-rpi-arm64.img.xz)"
  rm -rf "$image_out"
fi
echo "test.sh: all passed"
