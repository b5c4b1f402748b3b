#!/usr/bin/env bash
# scripts/package.sh [OUTDIR] — Ferry's .deb packages (default OUTDIR: dist/).
#
#   ferry_<version>_amd64.deb, ferry_<version>_arm64.deb,
#   ferry_<version>_armhf.deb (GOARM=7: Debian's armhf, Pi 2/3/4 on a 32-bit OS),
#   ferry_<version>_armhf-armv6.deb (GOARM=6: Raspberry Pi OS armhf on a Pi Zero/1)
#
# The version is the git tag on HEAD (v1.2.3 → 1.2.3), else the VERSION file;
# FERRY_VERSION overrides both; `ferry --version` prints it. Binaries are static (no cgo), cross-compiled
# here; nfpm is the one pinned in go.mod (go tool nfpm), nothing is downloaded
# but Go modules. ARCHES="arm64 amd64" builds a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=${FERRY_VERSION:-$(git describe --tags --exact-match 2>/dev/null || true)}
version=${version#v}
[ -n "$version" ] || version=$(tr -d ' \n' < VERSION)
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

for target in ${ARCHES:-amd64 arm64 armhf armv6}; do
  goarm="" deb=$target suffix=""
  case $target in
    amd64|arm64) goarch=$target ;;
    armhf) goarch=arm goarm=7 ;;
    armv6) goarch=arm goarm=6 deb=armhf suffix=-armv6 ;;
    *) echo "package.sh: unknown architecture $target" >&2; exit 2 ;;
  esac
  mkdir -p "$build/$target"
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$build/$target/ferry" ./gateway
  file="$out/ferry_${version}_${deb}${suffix}.deb"
  FERRY_DEB_ARCH=$deb FERRY_VERSION=$version FERRY_BIN=$build/$target/ferry \
    go tool nfpm package --config configs/deb/nfpm.yaml --packager deb --target "$file" >&2
  echo "$file"
done
