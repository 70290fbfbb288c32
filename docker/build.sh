#!/usr/bin/env bash
# Builds the kiln-serve image (tag: $KILN_IMAGE, default kiln-serve:latest) from
# docker/Dockerfile, and the load balancer image of docker/compose.yaml
# (kiln-lb:latest).
#
# On a normal machine `docker build -f docker/Dockerfile -t kiln-serve .` does the same
# from public base images. This script is for machines that cannot pull images: it makes
# the bases locally, once, with debootstrap from the machine's own Debian mirror, and
# passes them to the same Dockerfile as build arguments:
#   kiln-runtime-base:bookworm  minimal Debian 12 with curl and CA certificates
#   kiln-lb-base:bookworm       the same with HAProxy
#   kiln-build-base:bookworm    Debian 12 with gcc, this machine's Rust toolchain, its
#                               cargo registry cache (the build runs --offline) and the
#                               libtorch that scripts/setup.sh installed
# Safe to run again: existing bases are reused (the build base only while Cargo.lock and
# the Rust toolchain are those it was made with: its registry copy must hold every crate
# the offline build needs); Docker's cache makes a rebuild quick.
# --bases-only makes the bases and stops.
# --trainer builds the kiln-train image instead (tag: $KILN_TRAINER_IMAGE, default
# kiln-train:latest; the Dockerfile's `trainer` target).
# PUBLIC_BASES=1 builds from the public images instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IMAGE="${KILN_IMAGE:-kiln-serve:latest}"
TRAINER_IMAGE="${KILN_TRAINER_IMAGE:-kiln-train:latest}"
log() { echo "[docker] $*" >&2; }

if [ -n "${PUBLIC_BASES:-}" ]; then
  if [ "${1:-}" = "--trainer" ]; then
    docker build -f docker/Dockerfile --target trainer -t "$TRAINER_IMAGE" .
    exit 0
  fi
  docker build -f docker/Dockerfile -t "$IMAGE" .
  docker build -f docker/lb/Dockerfile -t kiln-lb:latest docker/lb
  exit 0
fi

# The Debian mirror apt uses on this machine.
mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
  fi
  [ -n "$m" ] || { echo "no Debian mirror found in /etc/apt" >&2; exit 1; }
  echo "$m"
}

need_debootstrap() {
  command -v debootstrap >/dev/null && return
  log "installing debootstrap from Debian's packages"
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
}

WORK="$(mktemp -d /var/tmp/kiln-docker.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# debootstrap NAME PACKAGES -> a root filesystem in $WORK/NAME
rootfs() {
  need_debootstrap
  log "debootstrap $1 (bookworm, minbase + $2)"
  debootstrap --variant=minbase --include="$2" bookworm "$WORK/$1" "$(mirror)" >"$WORK/$1.log" 2>&1 \
    || { tail -20 "$WORK/$1.log" >&2; exit 1; }
  rm -rf "$WORK/$1"/var/cache/apt/archives/*.deb "$WORK/$1"/var/lib/apt/lists/*
}

PATH_ENV='ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

if ! docker image inspect kiln-runtime-base:bookworm >/dev/null 2>&1; then
  rootfs runtime ca-certificates,curl
  tar -C "$WORK/runtime" -c . | docker import -c "$PATH_ENV" - kiln-runtime-base:bookworm >/dev/null
  rm -rf "$WORK/runtime"
fi

if ! docker image inspect kiln-lb-base:bookworm >/dev/null 2>&1; then
  rootfs lb ca-certificates,haproxy
  tar -C "$WORK/lb" -c . | docker import -c "$PATH_ENV" - kiln-lb-base:bookworm >/dev/null
  rm -rf "$WORK/lb"
fi

# What the build base was made from: Cargo.lock (the crates copied in), the toolchain and
# the packages it holds (gloo's headers since kiln-dist).
# (The recipe's own version last: 2 leaves out the toolchain's HTML docs and the unpacked
# crate sources.)
INPUTS="$( (sha256sum Cargo.lock; rustc --version; echo libgloo-dev; echo recipe-2) | sha256sum | cut -c1-16)"
made_from="$({ docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' kiln-build-base:bookworm 2>/dev/null \
  || true; } | sed -n 's/^KILN_BASE_INPUTS=//p')"
if [ "$made_from" != "$INPUTS" ]; then
  [ -z "$made_from" ] || log "kiln-build-base:bookworm was made for another Cargo.lock or toolchain: making it again"
  bash scripts/setup.sh >/dev/null
  cargo fetch --locked --target "$(rustc -vV | sed -n 's/^host: //p')" >/dev/null
  rootfs build ca-certificates,gcc,g++,libc6-dev,make,binutils,curl,libgloo-dev
  B="$WORK/build"
  log "adding the Rust toolchain, the cargo registry cache and libtorch"
  SYSROOT="$(rustc --print sysroot)"
  mkdir -p "$B/usr/local/rust" "$B/usr/local/cargo" "$B/opt/libtorch/lib"
  # Without share/doc (the toolchain's HTML docs: 800 MB in some 50,000 files, which every
  # build step's commit would otherwise walk).
  tar -C "$SYSROOT" --exclude=./share/doc -c . | tar -C "$B/usr/local/rust" -x
  # The index and the downloaded .crate files; cargo unpacks the sources it compiles
  # (leaving out registry/src spares the build steps some 20,000 files to walk).
  tar -C "${CARGO_HOME:-$HOME/.cargo}" --exclude=./registry/src -c ./registry | tar -C "$B/usr/local/cargo" -x
  cp -a .libtorch/include "$B/opt/libtorch/"
  for lib in libtorch_cpu.so libtorch.so libc10.so libgomp.so.1 libshm.so libtorch_global_deps.so; do
    cp -L ".libtorch/lib/$lib" "$B/opt/libtorch/lib/"
  done
  NV="$(readlink -f .libtorch)/../nvidia/cu13/lib"
  cp -L "$NV/libcudart.so.13" "$NV/libcupti.so.13" "$B/opt/libtorch/lib/"
  tar -C "$B" -c . | docker import -c "$PATH_ENV" -c 'ENV CARGO_HOME=/usr/local/cargo' \
    -c "ENV KILN_BASE_INPUTS=$INPUTS" - kiln-build-base:bookworm >/dev/null
  rm -rf "$B"
fi

# --bases-only: stop here (scripts/test.sh makes the bases while the compilers run).
if [ "${1:-}" = "--bases-only" ]; then
  log "bases ready"
  exit 0
fi

# docker build, its output kept in a log shown when it fails.
build() {
  docker build "$@" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
}
if [ "${1:-}" = "--trainer" ]; then
  log "building $TRAINER_IMAGE (its build stage is the serve image's, from Docker's cache once that is built)"
  build -f docker/Dockerfile --target trainer \
    --build-arg BUILD_BASE=kiln-build-base:bookworm \
    --build-arg RUNTIME_BASE=kiln-runtime-base:bookworm \
    --build-arg CARGO_FLAGS="--locked --offline" \
    -t "$TRAINER_IMAGE" .
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^kiln-train:' >&2
  exit 0
fi
log "building $IMAGE (compiles kiln-serve and kiln-train in the build stage: several minutes the first time)"
build -f docker/Dockerfile \
  --build-arg BUILD_BASE=kiln-build-base:bookworm \
  --build-arg RUNTIME_BASE=kiln-runtime-base:bookworm \
  --build-arg CARGO_FLAGS="--locked --offline" \
  -t "$IMAGE" .
log "building kiln-lb:latest"
build -f docker/lb/Dockerfile --build-arg LB_BASE=kiln-lb-base:bookworm -t kiln-lb:latest docker/lb
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(kiln-serve|kiln-lb):' >&2
