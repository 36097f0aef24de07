#!/bin/sh
# kmip2pkcs11: install what building and testing need, on Debian or Ubuntu.
#
# Idempotent: a package already installed is not touched, the apt lists are
# refreshed only when something is missing, and the Debian 12 extra suite is
# written only once.  Run as root, or as a user who may sudo.
#
#   dist/deps.sh          build + test dependencies
#   dist/deps.sh --source also what `make static` needs to fetch the Mbed TLS 3.6
#                         source (dpkg-dev, a deb-src entry); dist/build-mbedtls.sh
#                         fetches it with apt-get source
#   dist/deps.sh --deb    --source, and what `make deb` needs: debhelper, lintian
#   dist/deps.sh --cross [TRIPLET...]
#                         --source, and for `make cross-check`: the Debian cross
#                         compilers gcc-TRIPLET with their C library, and qemu-user
#                         (default: aarch64-linux-gnu arm-linux-gnueabihf
#                         mips-linux-gnu mipsel-linux-gnu)
set -eu

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "deps.sh: run as root or install sudo" >&2; exit 1; }
	SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive

WANT_SOURCE=0 WANT_DEB=0 CROSS=
case ${1:-} in
--source) WANT_SOURCE=1 ;;
--deb)    WANT_SOURCE=1 WANT_DEB=1 ;;
--cross)  WANT_SOURCE=1; shift
          CROSS=${*:-aarch64-linux-gnu arm-linux-gnueabihf mips-linux-gnu mipsel-linux-gnu} ;;
"")       ;;
*)        echo "usage: dist/deps.sh [--source | --deb | --cross [TRIPLET...]]" >&2; exit 2 ;;
esac

PKGS="gcc make libc6-dev softhsm2 openssl python3 python3-pykmip
python3-cryptography clang libclang-rt-dev valgrind systemd util-linux procps"

# The second real PKCS#11 implementation of the tests (tests/tpm-token.sh): tpm2-pkcs11 and
# its tpm2_ptool, a software TPM, tpm2-tools, the access broker with its TCTI, and D-Bus
# for the broker's private session bus.  The swtpm TCTI comes with libtss2-tctildr0.
PKGS="$PKGS libtpm2-pkcs11-1 libtpm2-pkcs11-tools swtpm swtpm-tools tpm2-tools tpm2-abrmd
libtss2-tcti-tabrmd0 dbus"

. /etc/os-release
codename=${VERSION_CODENAME:-}

# The Debian 12 way in to Mbed TLS 3.6: the trixie suite, pinned low so that
# only what we ask for by name (-t trixie) comes from it.
TRIXIE_LIST=/etc/apt/sources.list.d/kmip2pkcs11-trixie.sources
TRIXIE_PIN=/etc/apt/preferences.d/kmip2pkcs11-trixie
need_trixie=0
if [ "${ID:-}" = debian ] && [ "$codename" = bookworm ]; then
	need_trixie=1
fi

updated=0
apt_update() {
	if [ "$updated" = 0 ]; then
		$SUDO apt-get update -q >/dev/null
		updated=1
	fi
}

missing() {
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
	done
}

# The Debian archive address, derived from the system's own sources, never a host
# name of ours.
debian_uri() {
	u=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$u" ] || u=$(awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$u" ] || { echo "deps.sh: cannot find the Debian archive address in /etc/apt" >&2; exit 1; }
	echo "$u"
}

if [ "$need_trixie" = 1 ] && [ ! -f "$TRIXIE_LIST" ]; then
	uri=$(debian_uri)
	$SUDO sh -c "cat > $TRIXIE_LIST" <<EOT
Types: deb deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
	$SUDO sh -c "cat > $TRIXIE_PIN" <<EOT
Package: *
Pin: release n=trixie
Pin-Priority: 100
EOT
	updated=0
fi

# Debian 12's clang is 14; its libFuzzer runtime has a versioned name.
if [ "$codename" = bookworm ]; then
	PKGS=$(echo "$PKGS" | sed 's/libclang-rt-dev/libclang-rt-14-dev/')
fi

[ "$WANT_DEB" = 0 ] || PKGS="$PKGS debhelper lintian dpkg-dev"
# A cross compiler and the target's C library (the package names Debian gives them),
# and qemu-user to run what they build.
for t in $CROSS; do
	case $t in
	aarch64-linux-gnu)   a=arm64 ;;
	arm-linux-gnueabihf) a=armhf ;;
	mips-linux-gnu)      a=mips ;;
	mipsel-linux-gnu)    a=mipsel ;;
	*) echo "deps.sh: no Debian cross compiler known for $t" >&2; exit 2 ;;
	esac
	PKGS="$PKGS gcc-$t libc6-dev-$a-cross"
done
[ -z "$CROSS" ] || PKGS="$PKGS qemu-user"

todo=$(missing $PKGS)
if [ -n "$todo" ]; then
	apt_update
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -q --no-install-recommends $todo >/dev/null
fi

mbedtls_ok() {
	f=/usr/include/mbedtls/build_info.h
	[ -f "$f" ] || return 1
	v=$(awk '/define MBEDTLS_VERSION_NUMBER/ { print $3 }' "$f")
	[ -n "$v" ] && [ $((v)) -ge $((0x03060000)) ]
}

if ! mbedtls_ok; then
	apt_update
	if [ "$need_trixie" = 1 ]; then
		$SUDO apt-get install -y -q --no-install-recommends -t trixie libmbedtls-dev >/dev/null
	else
		$SUDO apt-get install -y -q --no-install-recommends libmbedtls-dev >/dev/null
	fi
	mbedtls_ok || { echo "deps.sh: this distribution has no Mbed TLS 3.6 (libmbedtls-dev); see README" >&2; exit 1; }
fi

# `make static`: apt-get source needs dpkg-source (dpkg-dev) and a deb-src entry whose
# Sources index lists Mbed TLS 3.6.  On Debian 12 that is the trixie entry above; on a
# later Debian without deb-src lines, one for the system's own suite is added.
SRC_LIST=/etc/apt/sources.list.d/kmip2pkcs11-src.sources
mbedtls_src_ok() {
	apt-cache showsrc mbedtls 2>/dev/null | awk '/^Version: 3\.6\./ { f = 1 } END { exit !f }'
}

if [ "$WANT_SOURCE" = 1 ]; then
	todo=$(missing dpkg-dev)
	[ -z "$todo" ] || { apt_update; $SUDO apt-get install -y -q --no-install-recommends dpkg-dev >/dev/null; }
	if ! mbedtls_src_ok; then
		if [ "$need_trixie" = 0 ] && [ "${ID:-}" = debian ] && [ -n "$codename" ] &&
		   [ ! -f "$SRC_LIST" ]; then
			uri=$(debian_uri)
			$SUDO sh -c "cat > $SRC_LIST" <<EOT
Types: deb-src
URIs: $uri
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
			updated=0
		fi
		apt_update    # also the first fetch of a Sources index never fetched
		mbedtls_src_ok || { echo "deps.sh: apt knows no Mbed TLS 3.6 source package; add a deb-src entry (see README)" >&2; exit 1; }
	fi
fi
echo "deps.sh: dependencies present"
