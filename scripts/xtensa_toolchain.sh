#!/usr/bin/env bash
# Provide the ESP32 / ESP32-S3 cross compilers and a QEMU with their cores, in a cache outside the
# clone (docs/TOOLCHAINS.md):
#
#   $CACHE/xtensa-esp-elf/bin/xtensa-esp32-elf-gcc, xtensa-esp32s3-elf-gcc   binutils 2.40 + gcc 12.2
#   $CACHE/qemu-xtensa/bin/qemu-system-xtensa                                QEMU 7.2, -cpu esp32 / esp32s3
#
# CACHE is ${EDGEBN_CACHE:-$HOME/.cache/edgebn}/toolchains. Idempotent: a complete cache is kept.
# Otherwise, in this order:
#   1. prebuilt tarballs in ${EDGEBN_SHARED_TOOLCHAINS:-<clone>/../shared/toolchains} (checked
#      against the SHA256SUMS beside them) are unpacked: seconds;
#   2. else everything is built from sources (about an hour on 2 cores; needs root for apt-get):
#      Debian's binutils-source and gcc-12-source, `apt-get source qemu` (a deb-src entry is added
#      for the archive apt already uses), Espressif's core overlays (git clone of xtensa-overlays,
#      or a checkout named by EDGEBN_XTENSA_OVERLAYS).
#
#   bash scripts/xtensa_toolchain.sh            provide the cache (fast path or cold build)
#   bash scripts/xtensa_toolchain.sh --check    exit 0 if the cache is complete, 1 if not
#   bash scripts/xtensa_toolchain.sh --cold     build from sources even if tarballs are there
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOME_DIR=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${EDGEBN_CACHE:-$HOME_DIR/.cache/edgebn}/toolchains
SHARED=${EDGEBN_SHARED_TOOLCHAINS:-$ROOT/../shared/toolchains}
GCC_TARBALL=xtensa-esp-elf-gcc12.2-binutils2.40-x86_64.tar.zst
QEMU_TARBALL=qemu-system-xtensa-7.2-esp32s3-esp32-x86_64.tar.zst
CORES=(esp32 esp32s3)
OVERLAYS_GIT=${EDGEBN_XTENSA_OVERLAYS_GIT:-https://github.com/espressif/xtensa-overlays.git}
JOBS=${EDGEBN_JOBS:-$(nproc)}

GCC_PREFIX=$CACHE/xtensa-esp-elf
QEMU_PREFIX=$CACHE/qemu-xtensa

log() { echo "xtensa_toolchain: $*" >&2; }
die() { echo "xtensa_toolchain: error: $*" >&2; exit 1; }

complete() {
    local c
    for c in "${CORES[@]}"; do
        [ -x "$GCC_PREFIX/bin/xtensa-$c-elf-gcc" ] || return 1
        [ -f "$GCC_PREFIX/lib/gcc/xtensa-$c-elf/12.2.0/libgcc.a" ] || return 1
    done
    [ -x "$QEMU_PREFIX/bin/qemu-system-xtensa" ] || return 1
    local cpus
    cpus=$("$QEMU_PREFIX/bin/qemu-system-xtensa" -cpu help 2>/dev/null) || return 1
    for c in "${CORES[@]}"; do
        grep -qw "$c" <<<"$cpus" || return 1
    done
}

# ---- fast path: the prebuilt tarballs ----

unpack_prebuilt() {
    if ! [ -f "$SHARED/SHA256SUMS" ] || ! [ -f "$SHARED/$GCC_TARBALL" ] || ! [ -f "$SHARED/$QEMU_TARBALL" ]; then
        log "no prebuilt tarballs in $SHARED (EDGEBN_SHARED_TOOLCHAINS)"
        return 1
    fi
    log "checking $SHARED/SHA256SUMS"
    if ! (cd "$SHARED" && grep -E " ($GCC_TARBALL|$QEMU_TARBALL)\$" SHA256SUMS | sha256sum --quiet -c -); then
        log "the prebuilt tarballs in $SHARED do not match SHA256SUMS; building from sources instead"
        return 1
    fi
    command -v zstd >/dev/null || die "zstd is needed to unpack $SHARED/*.tar.zst (apt-get install zstd)"
    local tmp
    tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
    tar --zstd -xf "$SHARED/$GCC_TARBALL" -C "$tmp"
    tar --zstd -xf "$SHARED/$QEMU_TARBALL" -C "$tmp"
    rm -rf "$GCC_PREFIX" "$QEMU_PREFIX"
    mv "$tmp/prefix" "$GCC_PREFIX"
    mv "$tmp/qemu-prefix" "$QEMU_PREFIX"
    rm -rf "$tmp"
    log "unpacked the prebuilt toolchains from $SHARED"
}

# ---- cold path: build from Debian's sources and Espressif's overlays ----

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "building the Xtensa toolchains needs root for apt-get (or unpack prebuilt tarballs: docs/TOOLCHAINS.md)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

add_deb_src() {
    # `apt-get source qemu` needs a deb-src entry: the same archive and suites as apt's deb entry.
    local src=/etc/apt/sources.list.d/debian.sources out=/etc/apt/sources.list.d/edgebn-deb-src.sources
    [ -f "$out" ] && return 0
    if [ -f "$src" ]; then
        sed 's/^Types: deb$/Types: deb-src/' "$src" >"$out"
    elif [ -f /etc/apt/sources.list ]; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/edgebn-deb-src.list
    else
        die "no apt source list found to derive a deb-src entry from"
    fi
    apt-get update -qq
}

overlays() {
    if [ -n "${EDGEBN_XTENSA_OVERLAYS:-}" ]; then
        echo "$EDGEBN_XTENSA_OVERLAYS"
        return
    fi
    local dir=$WORK/xtensa-overlays
    [ -d "$dir/.git" ] || git clone -q --depth 1 "$OVERLAYS_GIT" "$dir" >&2 ||
        die "could not clone $OVERLAYS_GIT; set EDGEBN_XTENSA_OVERLAYS to a checkout of it"
    echo "$dir"
}

build_binutils_gcc() {
    local core=$1 ov=$2 target=xtensa-$1-elf
    local b=$WORK/binutils-$core g=$WORK/gcc-$core
    rm -rf "$b" "$g"
    mkdir -p "$b" "$g"
    log "binutils 2.40 for $target (4-6 min)"
    tar -xf /usr/src/binutils/binutils-2.40.tar.xz -C "$b"
    cp "$ov/xtensa_$core/binutils/bfd/xtensa-modules.c" "$b/binutils-2.40/bfd/"
    cp "$ov/xtensa_$core/binutils/include/xtensa-config.h" "$b/binutils-2.40/include/"
    (cd "$b" && mkdir build && cd build &&
        ../binutils-2.40/configure --target="$target" --prefix="$GCC_PREFIX" --disable-nls \
            --disable-werror --disable-gdb --disable-sim --disable-gprofng >/dev/null &&
        make -j"$JOBS" >/dev/null && make install-strip >/dev/null)
    log "gcc 12.2 for $target (22-34 min)"
    tar -xf /usr/src/gcc-12/gcc-12.2.0-dfsg.tar.xz -C "$g"
    # Debian removed the GFDL manuals from the tarball; its own patch lets the build go on without them.
    (cd "$g/gcc-12.2.0" && patch -s -p2 </usr/src/gcc-12/debian/patches/gcc-gfdl-build.diff)
    cp "$ov/xtensa_$core/gcc/include/xtensa-config.h" "$g/gcc-12.2.0/include/"
    (cd "$g" && mkdir build && cd build &&
        PATH="$GCC_PREFIX/bin:$PATH" ../gcc-12.2.0/configure --target="$target" --prefix="$GCC_PREFIX" \
            --enable-languages=c --without-headers --with-newlib --disable-shared --disable-threads \
            --disable-libssp --disable-libgomp --disable-libquadmath --disable-multilib --disable-nls \
            >/dev/null &&
        PATH="$GCC_PREFIX/bin:$PATH" make -j"$JOBS" all-gcc all-target-libgcc >/dev/null &&
        PATH="$GCC_PREFIX/bin:$PATH" make install-strip-gcc install-target-libgcc >/dev/null)
    rm -rf "$b" "$g"
}

build_qemu() {
    local ov=$1 q=$WORK/qemu core
    rm -rf "$q"
    mkdir -p "$q"
    log "QEMU 7.2 with cores ${CORES[*]} (4-8 min)"
    (cd "$q" && apt-get source -qq qemu >/dev/null)
    local src
    src=$(find "$q" -maxdepth 1 -type d -name 'qemu-*' | head -1)
    [ -n "$src" ] || die "apt-get source qemu unpacked nothing"
    for core in "${CORES[@]}"; do
        # import_core.sh takes an overlay tarball; Espressif's overlays have no core-matmap.h, an
        # empty one makes QEMU use its default memory map.
        local t=$q/overlay-$core
        mkdir -p "$t/xtensa/config" "$t/gdb" "$t/binutils"
        cp "$ov/xtensa_$core/newlib/newlib/libc/sys/xtensa/include/xtensa/config/core-isa.h" "$t/xtensa/config/"
        : >"$t/xtensa/config/core-matmap.h"
        cp "$ov/xtensa_$core/gdb/gdb/xtensa-config.c" "$t/gdb/"
        cp "$ov/xtensa_$core/binutils/bfd/xtensa-modules.c" "$t/binutils/"
        tar -czf "$t.tar.gz" -C "$t" xtensa gdb binutils
        (cd "$src" && bash target/xtensa/import_core.sh "$t.tar.gz" "$core")
    done
    (cd "$src" && mkdir -p build && cd build &&
        ../configure --target-list=xtensa-softmmu --prefix="$QEMU_PREFIX" --disable-docs \
            --disable-werror >/dev/null &&
        make -j"$JOBS" >/dev/null && make install >/dev/null)
    strip "$QEMU_PREFIX/bin/qemu-system-xtensa" || true
    rm -rf "$q"
}

cold_build() {
    local started=$SECONDS
    log "building from sources into $CACHE (about an hour on 2 cores)"
    apt_install binutils-source gcc-12-source build-essential dpkg-dev git texinfo flex bison \
        libgmp-dev libmpfr-dev libmpc-dev meson ninja-build pkg-config python3-venv \
        libglib2.0-dev libpixman-1-dev zlib1g-dev
    add_deb_src
    WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
    local ov core
    ov=$(overlays) || exit 1
    for core in "${CORES[@]}"; do
        [ -d "$ov/xtensa_$core" ] || die "$ov has no xtensa_$core overlay"
    done
    for core in "${CORES[@]}"; do
        build_binutils_gcc "$core" "$ov"
    done
    build_qemu "$ov"
    rm -rf "$WORK"
    log "cold build done in $(((SECONDS - started) / 60)) min"
}

main() {
    local mode=${1:-}
    case "$mode" in
    --check) complete; exit $? ;;
    --cold | "") ;;
    *) die "unknown option $mode (--check, --cold)" ;;
    esac
    mkdir -p "$CACHE"
    if [ "$mode" != --cold ] && complete; then
        log "ready in $CACHE"
        return
    fi
    if [ "$mode" = --cold ] || ! unpack_prebuilt; then
        cold_build
    fi
    complete || die "the toolchain cache in $CACHE is still incomplete"
    log "ready in $CACHE"
}

main "$@"
