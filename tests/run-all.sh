#!/bin/sh
# Runs every test program of `make check`, each of which ends with "N passed, N failed"
# (followed by ", N skipped" when it could not make some checks here), and ends the whole
# run with the sums in the same form.  A skip is never counted as passed.  A program that
# dies, or whose exit status disagrees with its own count, counts as one more failure.
cd "$(dirname "$0")/.." || exit 1
. tests/netlib.sh                # tally
mkdir -p build/logs
total_p=0 total_f=0 total_s=0

run() {
	name=$1; shift
	start=$(date +%s)
	"$@" > "build/logs/$name.log" 2>&1
	rc=$?
	end=$(date +%s)
	tally "build/logs/$name.log"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	grep -E '^(FAIL|SKIP|NOTE|vectors:|fuzz replay:)' "build/logs/$name.log" | head -n 40
	[ "$rc" -ne 0 ] && [ -z "$last" ] && tail -n 20 "build/logs/$name.log"
	if [ "$s" -gt 0 ]; then skipped=", $s skipped"; else skipped=; fi
	printf '%-14s %4d passed, %d failed%s  (%ss)\n' "$name" "$p" "$f" "$skipped" $((end - start))
	total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + s))
}

run ttlv      build/test_ttlv
run fuzz-ttlv build/fuzz_ttlv_replay tests/corpus/ttlv
run fuzz-cfg  build/fuzz_cfg_replay tests/corpus/cfg
run fuzz-op   build/fuzz_op_replay tests/corpus/op
run config    build/test_cfg
run pkcs11    env LSAN_OPTIONS=suppressions=tests/lsan.supp build/test_p11
run tls       build/test_tls
run ops       build/test_op
run daemon    sh tests/integration.sh ./kmip2pkcs11
run service   sh tests/service.sh ./kmip2pkcs11
# `make check` builds both; run by hand without them, each run left out is one skip.
if [ -x build/kmip2pkcs11-asan ]; then
	run daemon-asan env LSAN_OPTIONS=suppressions=$(pwd)/tests/lsan.supp \
		sh tests/integration.sh build/kmip2pkcs11-asan
else
	echo "SKIP daemon-asan: build/kmip2pkcs11-asan is not built"
	total_s=$((total_s + 1))
fi
# The same end-to-end tests on a second real PKCS#11 implementation: tpm2-pkcs11 on swtpm.
run daemon-tpm env TOKEN=tpm sh tests/integration.sh ./kmip2pkcs11
# Vendor behaviours (YubiHSM 2, NetHSM, Luna, SmartCard-HSM, ...) emulated over SoftHSM2,
# against the sanitizer build of the daemon when there is one.
if [ -x build/kmip2pkcs11-asan ]; then
	run vendors env LSAN_OPTIONS=suppressions=$(pwd)/tests/lsan.supp \
		sh tests/vendor.sh build/kmip2pkcs11-asan
else
	run vendors sh tests/vendor.sh ./kmip2pkcs11
fi
if [ -x ./kmip2pkcs11-static ]; then
	run daemon-static sh tests/integration.sh ./kmip2pkcs11-static
else
	echo "SKIP daemon-static: ./kmip2pkcs11-static is not built"
	total_s=$((total_s + 1))
fi

# The Debian package that `make check` built (dist/make-deb.sh --if-changed).
deb=$(ls build/deb/kmip2pkcs11_*.deb 2>/dev/null | head -n 1)
run package   sh tests/package.sh "$deb"

if [ "$total_s" -gt 0 ]; then
	echo "$total_p passed, $total_f failed, $total_s skipped"
else
	echo "$total_p passed, $total_f failed"
fi
[ "$total_f" -eq 0 ]
