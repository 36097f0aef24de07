#!/bin/sh
# kmip2pkcs11: the Debian package, for `make deb` (which runs `make static` first).
#
#   sh dist/make-deb.sh [--if-changed]
#       --if-changed (make check): nothing to do when the package in build/deb was built
#       from the same files (a checksum of every file that goes into it, in build/deb/.sum)
#
# dpkg-buildpackage writes its results next to the source tree, so the package is built
# from a copy of the tree in build/deb/kmip2pkcs11-VERSION; the Mbed TLS that `make
# static` built goes along (build/TRIPLET/mbedtls-static: headers, libraries and their
# stamp), so that the package build needs no network.  Results in build/deb:
# kmip2pkcs11_VERSION_ARCH.deb, the .buildinfo and .changes, lintian.txt (lintian's
# report) and build.log.  Exits non-zero when the build fails or lintian reports an error.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
triplet=$(${CC:-cc} -dumpmachine)
out=$top/build/deb
src=$out/kmip2pkcs11-$version
mb=build/$triplet/mbedtls-static

[ -f "$mb/.stamp" ] || { echo "make-deb: $mb missing: run make static first" >&2; exit 1; }

# The files of the source tree: the tracked ones (and new ones not ignored) in a git
# checkout, else everything but build/.
files() {
	if git rev-parse --git-dir >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard
	else
		find . -path ./build -prune -o -path ./.git -prune -o -type f -print0
	fi
}
sum=$( { files | xargs -0 cat 2>/dev/null; cat "$mb/.stamp"; } | cksum)
if [ "${1:-}" = --if-changed ] && [ -f "$out/.sum" ] && [ "$(cat "$out/.sum")" = "$sum" ] &&
   [ -f "$out/kmip2pkcs11_${version}_$arch.deb" ]; then
	echo "make-deb: build/deb/kmip2pkcs11_${version}_$arch.deb is up to date"
	exit 0
fi

rm -rf "$out"
mkdir -p "$src"
files | xargs -0 tar -cf - | tar -C "$src" -xf -
mkdir -p "$src/$mb"
cp -pR "$mb/include" "$mb/lib" "$mb/.stamp" "$mb/k2p-mbedtls-config.h" "$src/$mb/"

start=$(date +%s)
echo "make-deb: dpkg-buildpackage in $src"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) > "$out/build.log" 2>&1; then
	tail -n 30 "$out/build.log" >&2
	echo "make-deb: dpkg-buildpackage failed (whole log: $out/build.log)" >&2
	exit 1
fi
deb=$out/kmip2pkcs11_${version}_$arch.deb
[ -f "$deb" ] || { echo "make-deb: $deb was not made" >&2; exit 1; }
echo "make-deb: $deb built in $(( $(date +%s) - start ))s"

# lintian's whole report, informational tags included; errors fail the build.
lintian --display-info "$deb" > "$out/lintian.txt" 2>&1 || true
e=$(grep -c '^E:' "$out/lintian.txt" || true)
w=$(grep -c '^W:' "$out/lintian.txt" || true)
i=$(grep -c '^I:' "$out/lintian.txt" || true)
echo "$sum" > "$out/.sum"
echo "make-deb: lintian: $e errors, $w warnings, $i info ($out/lintian.txt)"
grep -E '^(E|W):' "$out/lintian.txt" || true
[ "$e" -eq 0 ]
