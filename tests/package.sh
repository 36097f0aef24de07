#!/bin/sh
# The Debian package as a user receives it (`make deb`, debian/).
#
#   sh tests/package.sh build/deb/kmip2pkcs11_VERSION_ARCH.deb   (from the repository root)
#
# Reads the package with dpkg-deb (fields, file list with modes and owners, conffiles,
# maintainer scripts), unpacks it into a throw-away directory with dpkg-deb -x and runs
# what it unpacked there: the binary, the packaged configuration, and the maintainer
# scripts with DPKG_ROOT pointing into that directory and the commands that would change
# the system (adduser, chown, deb-systemd-helper, ...) replaced by stubs that record
# their arguments.  Nothing is installed on this machine.  Ends with "N passed, N failed".
set -u
DEB=${1:-}
passed=0 failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL package: $*"; }
check() {	# check NAME COMMAND...
	name=$1; shift
	if "$@"; then ok; else bad "$name"; fi
}

if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
	bad "no package ${DEB:-given} (make deb; build/deb/build.log)"
	echo "$passed passed, $failed failed"
	exit 1
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/k2p-pkg.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
echo "package: $DEB"

# ---- lintian (make deb keeps its report next to the package) ----------------------
L=$(dirname "$DEB")/lintian.txt
if [ -f "$L" ]; then
	check "lintian reports no errors ($L)" sh -c "! grep -q '^E:' '$L'"
	grep '^E:' "$L" | head -n 5
else
	bad "no lintian report $L"
fi

# ---- control fields ----------------------------------------------------------------
field() { dpkg-deb -f "$DEB" "$1"; }
check "Package is kmip2pkcs11" [ "$(field Package)" = kmip2pkcs11 ]
depends=$(field Depends)
case "$depends" in
*mbedtls*|*libssl*) bad "Depends names no TLS library: Mbed TLS is linked in ($depends)" ;;
*) ok ;;
esac
case "$depends" in
*"libc6 (>="*) ok ;;
*) bad "Depends has a versioned libc6 from the binary's symbols ($depends)" ;;
esac
case ", $depends," in
*", adduser,"*) ok ;;
*) bad "Depends has adduser, which postinst calls ($depends)" ;;
esac

# ---- files, modes, owners ----------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{ print $1, $2, $6 }' > "$T/list"
has() {	# has MODE PATH: PATH is in the package with MODE, owned by root/root
	grep -q -x -e "$1 root/root \\./$2" "$T/list"
}
check "usr/sbin/kmip2pkcs11, -rwxr-xr-x root/root" has -rwxr-xr-x usr/sbin/kmip2pkcs11
check "the man page usr/share/man/man8/kmip2pkcs11.8.gz" has -rw-r--r-- usr/share/man/man8/kmip2pkcs11.8.gz
check "etc/kmip2pkcs11/config.toml, -rw-r--r--" has -rw-r--r-- etc/kmip2pkcs11/config.toml
check "usr/share/doc/kmip2pkcs11/copyright" has -rw-r--r-- usr/share/doc/kmip2pkcs11/copyright
# dh_compress gzips documentation over 4 KiB: either name is the example configuration
example_in_doc() {
	has -rw-r--r-- usr/share/doc/kmip2pkcs11/config.example ||
		has -rw-r--r-- usr/share/doc/kmip2pkcs11/config.example.gz
}
check "usr/share/doc/kmip2pkcs11/config.example(.gz)" example_in_doc
unit=
for d in lib/systemd/system usr/lib/systemd/system; do
	has -rw-r--r-- "$d/kmip2pkcs11.service" && unit=$d/kmip2pkcs11.service
done
check "the unit kmip2pkcs11.service in (usr/)lib/systemd/system" [ -n "$unit" ]
check "nothing under usr/local" sh -c "! grep -q ' \\./usr/local' '$T/list'"
check "no state shipped: var/lib/kmip2pkcs11 is made by postinst" \
	sh -c "! grep -q ' \\./var/lib/kmip2pkcs11' '$T/list'"
check "no file is writable by group or others" \
	sh -c "! awk '\$1 !~ /^l/ && (substr(\$1, 6, 1) == \"w\" || substr(\$1, 9, 1) == \"w\")' '$T/list' | grep -q ."

# ---- control files: conffiles, maintainer scripts ----------------------------------
mkdir -p "$T/ctl" "$T/root"
dpkg-deb --ctrl-tarfile "$DEB" | tar -C "$T/ctl" -xf -
check "conffiles is exactly /etc/kmip2pkcs11/config.toml" \
	[ "$(cat "$T/ctl/conffiles" 2>/dev/null)" = /etc/kmip2pkcs11/config.toml ]
for s in postinst postrm; do
	check "$s is there and executable" test -x "$T/ctl/$s"
done
check "postinst never starts the service" sh -c "! grep -q -E 'deb-systemd-invoke .*start|systemctl .*start' '$T/ctl/postinst'"

# ---- the unpacked tree -------------------------------------------------------------
dpkg-deb -x "$DEB" "$T/root"
bin=$T/root/usr/sbin/kmip2pkcs11
version=$(field Version)
out=$("$bin" --version 2>&1)
check "the packaged binary runs: '$out' names version ${version%%-*}" [ "$out" = "kmip2pkcs11 ${version%%-*}" ]
needed=$(readelf -d "$bin" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
case "$needed" in
*mbedtls*|*mbedcrypto*|*mbedx509*) bad "the binary links no Mbed TLS library at run time ($needed)" ;;
*libc.so.6*) ok ;;
*) bad "readelf shows the binary's libraries ($needed)" ;;
esac

if [ -n "$unit" ]; then
	u=$T/root/$unit
	exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$u" | head -n 1)
	check "the unit starts /usr/sbin/kmip2pkcs11 ($exec_path)" [ "$exec_path" = /usr/sbin/kmip2pkcs11 ]
	check "the unit runs as User=kmip2pkcs11" grep -q -x 'User=kmip2pkcs11' "$u"
	check "the unit reads /etc/kmip2pkcs11/config.toml (or the default)" \
		sh -c "! grep '^ExecStart=' '$u' | grep -E -- '(-c|--config)[ =]' | grep -v -q '/etc/kmip2pkcs11/config.toml'"
fi

cfg=$T/root/etc/kmip2pkcs11/config.toml
out=$("$bin" --check-config -c "$cfg" 2>&1)
rc=$?
check "the packaged config is refused until lib-path is set (status $rc: $out)" \
	sh -c "[ $rc -eq 1 ] && echo '$out' | grep -q lib-path"
check "the packaged config names the module path in a comment" \
	grep -q -E '^#lib-path = "/usr/lib/softhsm/libsofthsm2.so"' "$cfg"
sed 's/^#lib-path/lib-path/' "$cfg" > "$T/set.toml"
out=$("$bin" --check-config -c "$T/set.toml" 2>&1)
check "with its lib-path line uncommented it is valid ($out)" [ "$out" = "configuration OK" ]

# ---- maintainer scripts, run against the unpacked tree ------------------------------
# Stubs record their arguments in $T/calls; getent knows the group softhsm only when
# $T/softhsm exists, and no user kmip2pkcs11 (a first install).
S=$T/stubs
mkdir -p "$S"
for c in adduser addgroup useradd chown deb-systemd-helper deb-systemd-invoke systemctl \
         dpkg-statoverride; do
	cat > "$S/$c" <<EOF
#!/bin/sh
echo "$c \$*" >> "$T/calls"
case "$c \$1" in
"deb-systemd-helper --quiet"|"deb-systemd-helper was-enabled") exit 1 ;;   # never enabled
"dpkg-statoverride --list") exit 1 ;;                                          # no override
esac
exit 0
EOF
done
cat > "$S/getent" <<EOF
#!/bin/sh
[ "\$1 \$2" = "group softhsm" ] && [ -f "$T/softhsm" ] && { echo "softhsm:x:120:"; exit 0; }
exit 2
EOF
cat > "$S/id" <<'EOF'
#!/bin/sh
echo kmip2pkcs11
EOF
chmod +x "$S"/*
maint() {	# maint SCRIPT ARGS...: the package's maintainer script, stubs first on PATH
	: > "$T/calls"
	env PATH="$S:$PATH" DPKG_ROOT="$T/root" DPKG_MAINTSCRIPT_PACKAGE=kmip2pkcs11 \
		sh "$T/ctl/$@" > "$T/maint.out" 2>&1
}

touch "$T/softhsm"
maint postinst configure
check "postinst configure succeeds" [ $? -eq 0 ]
check "postinst makes the system user and group kmip2pkcs11" \
	grep -q -E '^adduser .*--system.* --group.* kmip2pkcs11$' "$T/calls"
check "postinst puts kmip2pkcs11 in the group softhsm where it exists" \
	grep -q -x 'adduser --quiet kmip2pkcs11 softhsm' "$T/calls"
check "postinst makes the state directory /var/lib/kmip2pkcs11" test -d "$T/root/var/lib/kmip2pkcs11"
mode=$(stat -c %a "$T/root/var/lib/kmip2pkcs11" 2>/dev/null)
check "the state directory is 0700 (mode $mode)" [ "$mode" = 700 ]
check "postinst gives the state directory to kmip2pkcs11:kmip2pkcs11" \
	grep -q -x "chown kmip2pkcs11:kmip2pkcs11 $T/root/var/lib/kmip2pkcs11" "$T/calls"
check "postinst leaves the unit disabled (no enable without an earlier one)" \
	sh -c "! grep -q -E '^(deb-systemd-helper enable|systemctl .*enable)' '$T/calls'"
check "postinst starts nothing" sh -c "! grep -q -E '^(deb-systemd-invoke|systemctl) .*(start|restart)' '$T/calls'"

rm -f "$T/softhsm"
maint postinst configure
check "postinst without SoftHSM2 succeeds" [ $? -eq 0 ]
check "postinst without the group softhsm does not ask for it" \
	sh -c "! grep -q 'softhsm' '$T/calls'"

mkdir -p "$T/root/var/lib/kmip2pkcs11" && echo cert > "$T/root/var/lib/kmip2pkcs11/cert.pem"
maint postrm remove
check "postrm remove succeeds" [ $? -eq 0 ]
check "remove keeps the configuration" test -f "$cfg"
check "remove keeps the state (the certificate clients pinned)" test -f "$T/root/var/lib/kmip2pkcs11/cert.pem"
maint postrm purge
check "postrm purge succeeds" [ $? -eq 0 ]
check "purge removes /etc/kmip2pkcs11" test ! -e "$T/root/etc/kmip2pkcs11"
check "purge removes /var/lib/kmip2pkcs11" test ! -e "$T/root/var/lib/kmip2pkcs11"
check "purge tells deb-systemd-helper to forget the units" \
	grep -q -E '^deb-systemd-helper purge .*kmip2pkcs11.service' "$T/calls"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
