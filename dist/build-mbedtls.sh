#!/bin/sh
# kmip2pkcs11: build the small static Mbed TLS 3.6 that `make static` links.
#
#   dist/build-mbedtls.sh [BUILD_DIR [OUT_DIR]]
#       BUILD_DIR: where the source is fetched (default: build, next to dist/)
#       OUT_DIR:   where this build goes (default: BUILD_DIR/mbedtls-static); one per
#                  compiler and configuration, so that cross builds sit side by side
#
# Result: OUT_DIR/include   Mbed TLS headers, with the configuration installed as
#                           mbedtls/mbedtls_config.h
#         OUT_DIR/lib       libmbedtls.a libmbedx509.a libmbedcrypto.a
#         OUT_DIR/src       the copy of the library sources it was compiled in
#
# The source is Debian's mbedtls source package (the upstream release tarball, which
# ships its generated files, plus Debian's build patches), fetched with
# `apt-get source` into BUILD_DIR once and reused after that; apt checks it against the
# archive's signed index.  It is never part of this repository.  `dist/deps.sh --source`
# makes sure apt can fetch it (dpkg-dev, a deb-src entry).
#
# Idempotent: a finished build is reused while dist/mbedtls-config.h, this script, the
# compiler and the flags are unchanged (OUT_DIR/.stamp holds their checksum).
#
# Environment: CC (default cc; a cross compiler <triplet>-gcc brings <triplet>-ar),
# MBEDTLS_CONFIG (default dist/mbedtls-config.h; the cross-built tests use
# tests/mbedtls-test-config.h, the library's default configuration with threads, as
# Debian builds it), MBEDTLS_CFLAGS (default below), MBEDTLS_APT_SOURCE
# (what to hand `apt-get source`; default mbedtls/trixie on Debian 12, else mbedtls),
# JOBS (parallel compile jobs; default: number of CPUs).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
mkdir -p "$build"
build=$(cd "$build" && pwd)
config=${MBEDTLS_CONFIG:-$top/dist/mbedtls-config.h}
out=${2:-$build/mbedtls-static}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp=$out/.stamp

CC=${CC:-cc}
# The archiver that goes with the compiler: aarch64-linux-gnu-gcc -> aarch64-linux-gnu-gcc-ar
# (the host's ar cannot index a foreign architecture's objects, and only gcc-ar, with
# GCC's plugin, indexes the -flto objects of `make static`); plain <triplet>-ar or ar
# where there is no gcc-ar.
case $CC in
*-gcc) p=${CC%gcc} ;;
*)     p= ;;
esac
if [ -z "${AR:-}" ]; then
	for a in "${p}gcc-ar" "${p}ar" ar; do
		command -v "$a" >/dev/null 2>&1 && { AR=$a; break; }
	done
fi
# -Os and one section per function/object so that the daemon's --gc-sections drops
# what it does not call; no unwind tables (C, no exceptions, no backtraces: ~15% of
# the binary otherwise).
MBEDTLS_CFLAGS=${MBEDTLS_CFLAGS:--Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables}
JOBS=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}

say() { echo "build-mbedtls: $*"; }
die() { echo "build-mbedtls: $*" >&2; exit 1; }

# The config path goes into a -D inside make's command lines: keep it to plain characters.
case $build$out in
*[!A-Za-z0-9/._+-]*) die "build directory '$build' or '$out' has characters the Mbed TLS Makefile cannot quote" ;;
esac
[ -f "$config" ] || die "$config missing"

# ---- What would be built, and is it built already? -------------------------------
sum=$( { cat "$config" "$0"; echo "CC=$CC"; "$CC" --version 2>/dev/null | head -n 1;
         echo "AR=$AR CFLAGS=$MBEDTLS_CFLAGS"; } | cksum | awk '{ print $1 "-" $2 }')

find_src() {
	for d in "$build"/mbedtls-3.6.*; do
		[ -f "$d/library/Makefile" ] && [ -f "$d/include/mbedtls/build_info.h" ] && { echo "$d"; return 0; }
	done
	return 1
}

if [ -f "$stamp" ] && [ -f "$out/lib/libmbedcrypto.a" ] && [ -f "$out/lib/libmbedx509.a" ] &&
   [ -f "$out/lib/libmbedtls.a" ] && [ "$(sed -n 1p "$stamp")" = "$sum" ]; then
	touch "$stamp"   # for make: newer than the config it was built from
	say "up to date ($(sed -n 2p "$stamp"))"
	exit 0
fi

# ---- Source --------------------------------------------------------------------
if ! src=$(find_src); then
	command -v dpkg-source >/dev/null 2>&1 ||
		die "dpkg-source is missing: run dist/deps.sh --source (installs dpkg-dev)"
	# A download from an earlier run: unpack it again without the network.
	dsc=
	for f in "$build"/mbedtls_3.6.*.dsc; do [ -f "$f" ] && dsc=$f; done
	if [ -n "$dsc" ]; then
		say "unpacking $(basename "$dsc")"
		(cd "$build" && dpkg-source -x "$(basename "$dsc")" >"$build/mbedtls-fetch.log" 2>&1) ||
			{ tail -n 5 "$build/mbedtls-fetch.log" >&2; die "dpkg-source -x $(basename "$dsc") failed"; }
	else
		if [ -z "${MBEDTLS_APT_SOURCE:-}" ]; then
			MBEDTLS_APT_SOURCE=mbedtls
			# shellcheck disable=SC1091
			if [ -r /etc/os-release ] && . /etc/os-release &&
			   [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
				MBEDTLS_APT_SOURCE=mbedtls/trixie
			fi
		fi
		say "fetching the $MBEDTLS_APT_SOURCE source package with apt-get source"
		(cd "$build" && apt-get source -q "$MBEDTLS_APT_SOURCE" >"$build/mbedtls-fetch.log" 2>&1) || {
			tail -n 5 "$build/mbedtls-fetch.log" >&2
			die "apt-get source $MBEDTLS_APT_SOURCE failed: run dist/deps.sh --source (deb-src entry, apt-get update)"
		}
	fi
	src=$(find_src) || die "no mbedtls-3.6.* source in $build after unpacking (is the packaged version 3.6?)"
fi
version=$(awk '/define MBEDTLS_VERSION_STRING[ \t]/ { gsub(/"/, "", $3); print $3; exit }' \
	"$src/include/mbedtls/build_info.h")
case $version in
3.6.*) ;;
*) die "$src is Mbed TLS '$version', not 3.6" ;;
esac

# ---- Build ---------------------------------------------------------------------
# Each build compiles in its own copy of the directories that receive objects (library/,
# 3rdparty/: some 6 MB), so that builds for several compilers never share objects; the
# rest is linked (timestamps kept: the shipped generated files must stay newer than
# what they are generated from).
# Objects do not depend on the configuration in the Mbed TLS Makefile: start clean.
# The release tarball ships the generated sources (error.c, version_features.c,
# psa_crypto_driver_wrappers*.{c,h}, ssl_debug_helpers_generated.c); without GEN_FILES
# set, the Makefile only regenerates them when missing, so neither Perl scripts nor
# Python modules are needed.
say "building Mbed TLS $version with $CC in $out (config $(basename "$config"), $JOBS jobs)"
rm -rf "$out"
mkdir -p "$out/include" "$out/lib" "$out/src"
cp -pR "$src/library" "$src/3rdparty" "$out/src/"
for d in include scripts framework; do ln -s "$src/$d" "$out/src/$d"; done
cp "$config" "$out/k2p-mbedtls-config.h"
# The library's own default configuration, for a configuration that includes it.
cp "$src/include/mbedtls/mbedtls_config.h" "$out/mbedtls-default-config.h"
start=$(date +%s)
make -C "$out/src/library" clean >/dev/null
if ! make -C "$out/src/library" -j"$JOBS" CC="$CC" AR="$AR" \
	CFLAGS="$MBEDTLS_CFLAGS -DMBEDTLS_CONFIG_FILE='\"$out/k2p-mbedtls-config.h\"'" \
	libmbedcrypto.a libmbedx509.a libmbedtls.a >"$out/build.log" 2>&1; then
	tail -n 30 "$out/build.log" >&2
	die "Mbed TLS build failed (whole log: $out/build.log)"
fi

# ---- Install -------------------------------------------------------------------
cp -R "$src/include/mbedtls" "$src/include/psa" "$out/include/"
# The daemon includes <mbedtls/...> without -DMBEDTLS_CONFIG_FILE: installing the
# configuration under the default name keeps the headers it sees identical to the
# ones the library was compiled with.
cp "$config" "$out/include/mbedtls/mbedtls_config.h"
cp "$out/mbedtls-default-config.h" "$out/include/mbedtls/"
cp "$out/src/library/libmbedtls.a" "$out/src/library/libmbedx509.a" "$out/src/library/libmbedcrypto.a" \
	"$out/lib/"
printf '%s\nMbed TLS %s, built in %ss\n' "$sum" "$version" "$(( $(date +%s) - start ))" >"$stamp"
say "done: $out ($(sed -n 2p "$stamp"))"
