#!/bin/sh
# kmip2pkcs11: a root directory with Debian's SoftHSM2 for a foreign architecture, for
# the cross-built daemon and tests under qemu-user (`make cross-check`).
#
#   sh dist/cross-sysroot.sh TRIPLET DIR
#       TRIPLET: aarch64-linux-gnu, arm-linux-gnueabihf or mipsel-linux-gnu (Debian has
#                no SoftHSM2 for big-endian mips: exits 3)
#       DIR:     made here; `qemu-<arch> -L DIR` then finds the target's C library and
#                /usr/lib/softhsm/libsofthsm2.so under the paths a program asks for
#
# libsofthsm2 and softhsm2-common for the target, with everything they depend on down to
# libc6, are fetched with `apt-get download` and unpacked with `dpkg -x`.  Nothing is
# installed: apt runs on a state directory of its own (DIR.apt: the system's Debian
# archive and suite, the target architecture only), so neither `dpkg
# --add-architecture` nor the system's package lists change, and a multi-arch install,
# which would replace the native SoftHSM2, never happens.  Idempotent: a finished DIR is
# kept (DIR/.complete).  Needs the network once, like apt-get source for `make static`.
set -eu

die() { echo "cross-sysroot: $*" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: sh dist/cross-sysroot.sh TRIPLET DIR" >&2; exit 2; }
triplet=$1
case $triplet in
aarch64-linux-gnu)   arch=arm64 ;;
arm-linux-gnueabihf) arch=armhf ;;
mipsel-linux-gnu)    arch=mipsel ;;
mips-linux-gnu)      echo "cross-sysroot: Debian has no SoftHSM2 for mips (big-endian)" >&2; exit 3 ;;
*)                   die "no Debian architecture known for $triplet" ;;
esac
mkdir -p "$2"
root=$(cd "$2" && pwd)
[ -f "$root/.complete" ] && exit 0

. /etc/os-release
suite=${VERSION_CODENAME:-}
[ "${ID:-}" = debian ] && [ -n "$suite" ] || die "needs Debian (found ${ID:-?} ${suite:-?})"
uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk -v c="$suite" '$1 == "deb" && $3 == c { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || die "cannot find the Debian archive address in /etc/apt"

# ---- apt on a state directory of its own ----------------------------------------
A=$root.apt
mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/parts" "$A/prefs"
: > "$A/status"
cat > "$A/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main
EOF
apt() {
	cmd=$1; shift
	"$cmd" -q -o Dir::State="$A" -o Dir::State::Lists="$A/lists" \
		-o Dir::State::status="$A/status" -o Dir::Cache="$A" -o Dir::Cache::Archives="$A/archives" \
		-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts="$A/parts" \
		-o Dir::Etc::Preferences="$A/prefs/none" -o Dir::Etc::PreferencesParts="$A/prefs" \
		-o APT::Architecture="$arch" -o APT::Architectures="$arch" \
		-o APT::Sandbox::User=root "$@"
}
echo "cross-sysroot: $suite $arch package lists ($uri)"
apt apt-get update >"$A/update.log" 2>&1 || { tail -n 5 "$A/update.log" >&2; die "apt-get update failed"; }

# ---- libsofthsm2 and its dependencies, by name ------------------------------------
# What they depend on, recursively (every alternative; real packages only), without the
# packages that only configure a system: no shared object of theirs is ever loaded.
pkgs=$(apt apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
	--no-breaks --no-replaces --no-enhances libsofthsm2 softhsm2-common libc6 2>/dev/null |
	grep -E '^[a-z0-9]' | sort -u |
	grep -v -x -E 'debconf|debconf-2.0|perl-base|adduser|init-system-helpers|passwd|dpkg|tar|libselinux1|libpcre2-8-0|libaudit1|libaudit-common|libcap-ng0|libsemanage2|libsemanage-common|libsepol2|libbz2-1.0|liblzma5|libzstd1|libmd0|zlib1g|libpam0g|libpam-modules|libpam-modules-bin|libcrypt1|libdb5.3|libnsl2|libtirpc3|libtirpc-common|libgssapi-krb5-2|libkrb5-3|libk5crypto3|libkrb5support0|libkeyutils1|libcom-err2|libcap2|libacl1|debianutils|base-files|mawk|libtinfo6|libgmp10|cdebconf|libdebian-installer4|libnewt0.52|libslang2|libtextwrap1|readline-common|libreadline8|install-info|sensible-utils|ucf' |
	tr '\n' ' ')
case " $pkgs " in *" libsofthsm2 "*) ;; *) die "apt knows no libsofthsm2 for $arch" ;; esac
seen=" $pkgs"
echo "cross-sysroot: fetching$seen"
# shellcheck disable=SC2086
(cd "$A/archives" && apt apt-get download $seen >"$A/download.log" 2>&1) ||
	{ tail -n 5 "$A/download.log" >&2; die "apt-get download failed"; }
for deb in "$A"/archives/*.deb; do
	dpkg -x "$deb" "$root"
done
[ -f "$root/usr/lib/softhsm/libsofthsm2.so" ] || die "no usr/lib/softhsm/libsofthsm2.so in $root"
touch "$root/.complete"
echo "cross-sysroot: $root ($arch SoftHSM2 $(apt apt-cache show --no-all-versions libsofthsm2 | awk '/^Version:/ { print $2 }'))"
