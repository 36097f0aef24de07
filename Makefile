# kmip2pkcs11 - plain POSIX make.  `make help` lists the targets.

CC       ?= cc
CLANG    ?= clang
CFLAGS   ?= -O2 -g
PYTHON   ?= /usr/bin/python3
# Large-file support on 32-bit targets (64-bit off_t, ino_t: readdir, stat); no-op on 64-bit.
LFS       = -D_FILE_OFFSET_BITS=64
WARN      = -std=c99 -Wall -Wextra -Wshadow -Wformat=2 -Werror $(LFS)
LIBS      = -lmbedtls -lmbedx509 -lmbedcrypto -ldl -lpthread
SAN       = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
TFLAGS    = $(WARN) -Wno-unused-function -g -O1 $(SAN) -DK2P_TEST -I. -Itests
FUZZTIME ?= 60

# The compiler's target triplet names the directory of everything built per target
# (build/x86_64-linux-gnu, build/mips-linux-gnu, ...); a cross compiler <triplet>-gcc
# brings <triplet>-strip, -nm and -size.
TARGET   != $(CC) -dumpmachine 2>/dev/null || echo unknown
XPREFIX  != case "$(CC)" in *-gcc) echo "$(CC)" | sed 's/gcc$$//' ;; esac
XB        = build/$(TARGET)
STRIP    ?= $(XPREFIX)strip
NM       ?= $(XPREFIX)nm
SIZE     ?= $(XPREFIX)size

# make static: Mbed TLS built from its release source with dist/mbedtls-config.h, and
# linked with the daemon with link-time optimisation (about 20 KiB less on every target).
# ARCH_CFLAGS: the denser instruction sets where the target has them (see README), and
# x86-64's -fno-plt.  What each size flag saves is listed in dist/mbedtls-config.h.
MBEDTLS_STATIC = $(XB)/mbedtls-static
# -Oz where the compiler has it (GCC 12 and later), else -Os.  GCC 12's -Oz differs from
# -Os on x86-64 only: 3.8 KiB less there, and no difference measured in the speed of
# ECDSA, ECDH, AES-GCM, ChaCha20-Poly1305 or SHA-2.
SIZE_OPT != $(CC) -Oz -x c -c -o /dev/null /dev/null >/dev/null 2>&1 && echo -Oz || echo -Os
MIPS_CFLAGS    = -mips16 -minterlink-compressed -fno-ipa-ra
ARM_CFLAGS     = -mthumb
# x86-64: calls into libc through the GOT, without PLT stubs: 1.2 KiB less (on aarch64
# it costs 5 KiB: a GOT call there is three instructions).
X86_64_CFLAGS  = -fno-plt
ARCH_CFLAGS != case "$(TARGET)" in mips*) echo "$(MIPS_CFLAGS)" ;; arm*) echo "$(ARM_CFLAGS)" ;; \
	x86_64*) echo "$(X86_64_CFLAGS)" ;; esac
# aarch64 links for 4 KiB pages: the default 64 KiB alignment pads the file by up to
# 64 KiB (26 KiB today).  For a kernel with 16 or 64 KiB pages: AARCH64_LDFLAGS=
AARCH64_LDFLAGS = -Wl,-z,max-page-size=4096
ARCH_LDFLAGS != case "$(TARGET)" in aarch64*) echo "$(AARCH64_LDFLAGS)" ;; esac
# The whole program optimised as one LTO partition (in one thread), where GCC takes the
# option: 1.3 KiB less on x86-64, 0.8 on aarch64, 0.4 on armhf; on MIPS16 it costs
# 8 KiB, so not there.
LTO_LDFLAGS != case "$(TARGET)" in mips*) ;; *) $(CC) -flto-partition=one -x c -c -o /dev/null \
	/dev/null >/dev/null 2>&1 && echo -flto-partition=one ;; esac
STATIC_CFLAGS  = -std=c99 $(SIZE_OPT) -flto=auto -ffunction-sections -fdata-sections \
	-fno-asynchronous-unwind-tables -fno-unwind-tables $(ARCH_CFLAGS) $(LFS) $(HARDEN_CFLAGS) \
	-Wall -Wextra -Wshadow -Wformat=2 -Werror -DK2P_STATIC_MBEDTLS
STATIC_LDFLAGS = -Wl,--gc-sections -Wl,--as-needed -Wl,--exclude-libs,ALL $(ARCH_LDFLAGS) \
	$(LTO_LDFLAGS)
STATIC_LIBS    = $(MBEDTLS_STATIC)/lib/libmbedtls.a $(MBEDTLS_STATIC)/lib/libmbedx509.a \
	$(MBEDTLS_STATIC)/lib/libmbedcrypto.a $(ATOMIC_LIB) -ldl -lpthread
# 64-bit atomics (the daemon's counters) are calls into libatomic on 32-bit targets
# (mips, armhf): its static archive, from which the linker takes only what is called
# (nothing on x86-64 and aarch64), so the run-time dependency stays libc alone.
ATOMIC_LIB != f=`$(CC) -print-file-name=libatomic.a 2>/dev/null`; [ -f "$$f" ] && echo "$$f" || true

UNIT      = build/test_ttlv build/test_cfg build/test_p11 build/test_tls build/test_op
TOOLS     = build/nullp11.so build/vendorp11.so build/fuzz_ttlv_replay build/e2e build/bench

all: kmip2pkcs11

.PHONY: all help check static size fuzz demo demo-clean deb cross-check units install bench clean

help:
	@echo "make            build ./kmip2pkcs11 against the system Mbed TLS (3.6 or newer)"
	@echo "make check      install what is missing, build, run every test; last line N passed, N failed"
	@echo "make demo       install what is missing, make a SoftHSM2 token, serve KMIP on 127.0.0.1:5696"
	@echo "                (DEMO_PORT=N for another port; the token in ./demo is kept between runs)"
	@echo "make demo-clean remove ./demo: the demo token, its keys, configuration and certificate"
	@echo "make fuzz       run the libFuzzer targets (clang) for FUZZTIME=$(FUZZTIME) seconds each"
	@echo "make bench      sign/latency/memory benchmarks against the in-process PKCS#11 baseline"
	@echo "make static     ./kmip2pkcs11-static: Mbed TLS built in with dist/mbedtls-config.h"
	@echo "make size       stripped size of the static build and its largest symbols (CC=<triplet>-gcc: that target's)"
	@echo "make cross-check CROSS=<triplet>  build the tests and the daemon for <triplet>, run them under qemu-user"
	@echo "make deb        the Debian package in build/deb, checked by lintian (installs debhelper, lintian)"
	@echo "make install    ./kmip2pkcs11, man page, config example, systemd units (PREFIX, DESTDIR)"
	@echo "make units      build/kmip2pkcs11.service and .socket for PREFIX (make install does this)"
	@echo "make clean      remove what the build made (not ./demo: see demo-clean)"

build/.mbedtls-ok: dist/check-mbedtls.sh
	@mkdir -p build
	@CC="$(CC)" sh dist/check-mbedtls.sh
	@touch $@

kmip2pkcs11: kmip2pkcs11.c pkcs11/pkcs11.h build/.mbedtls-ok
	$(CC) $(WARN) $(CFLAGS) -o $@ kmip2pkcs11.c $(LIBS)

TDEPS     = kmip2pkcs11.c pkcs11/pkcs11.h tests/check.h tests/kreq.h build/.mbedtls-ok

build/test_ttlv: tests/test_ttlv.c $(TDEPS)
	$(CC) $(TFLAGS) -o $@ tests/test_ttlv.c $(LIBS)

build/test_cfg: tests/test_cfg.c $(TDEPS)
	$(CC) $(TFLAGS) -o $@ tests/test_cfg.c $(LIBS)

build/test_p11: tests/test_p11.c tests/p11test.h dist/softhsm-token.sh $(TDEPS)
	$(CC) $(TFLAGS) -o $@ tests/test_p11.c $(LIBS)

build/test_tls: tests/test_tls.c tests/kclient.h $(TDEPS)
	$(CC) $(TFLAGS) -o $@ tests/test_tls.c $(LIBS)

build/test_op: tests/test_op.c tests/p11test.h dist/softhsm-token.sh $(TDEPS)
	$(CC) $(TFLAGS) -o $@ tests/test_op.c $(LIBS)

# The daemon itself under the sanitizers, for the end-to-end tests.
build/kmip2pkcs11-asan: kmip2pkcs11.c pkcs11/pkcs11.h build/.mbedtls-ok
	$(CC) $(WARN) -g -O1 $(SAN) -o $@ kmip2pkcs11.c $(LIBS)

# The daemon as it sees an Mbed TLS without MBEDTLS_THREADING_C: only workers = 0 may run.
build/kmip2pkcs11-nothreads: kmip2pkcs11.c pkcs11/pkcs11.h build/.mbedtls-ok
	$(CC) $(WARN) -O1 -DK2P_TEST_NO_THREADING -o $@ kmip2pkcs11.c $(LIBS)

build/nullp11.so: tests/nullp11.c pkcs11/pkcs11.h
	@mkdir -p build
	$(CC) $(WARN) -O2 -g -shared -fPIC -I. -o $@ tests/nullp11.c

build/vendorp11.so: tests/vendorp11.c pkcs11/pkcs11.h
	@mkdir -p build
	$(CC) $(WARN) -O2 -g -shared -fPIC -I. -o $@ tests/vendorp11.c -ldl -lpthread

build/fuzz_ttlv_replay: tests/fuzz_ttlv.c tests/fuzz_replay.h tests/kreq.h kmip2pkcs11.c build/.mbedtls-ok
	$(CC) $(TFLAGS) -DK2P_FUZZ_REPLAY -o $@ tests/fuzz_ttlv.c $(LIBS)

build/fuzz_cfg_replay: tests/fuzz_cfg.c tests/fuzz_replay.h kmip2pkcs11.c build/.mbedtls-ok
	$(CC) $(TFLAGS) -DK2P_FUZZ_REPLAY -o $@ tests/fuzz_cfg.c $(LIBS)

build/fuzz_op_replay: tests/fuzz_op.c tests/fuzz_replay.h tests/kreq.h kmip2pkcs11.c tests/nullp11.c build/.mbedtls-ok build/nullp11.so
	$(CC) $(TFLAGS) -DK2P_FUZZ_REPLAY -o $@ tests/fuzz_op.c $(LIBS)

build/e2e: tests/e2e.c tests/kclient.h tests/kreq.h kmip2pkcs11.c build/.mbedtls-ok
	$(CC) $(TFLAGS) -o $@ tests/e2e.c $(LIBS)

build/bench: tests/bench.c tests/kclient.h tests/kreq.h kmip2pkcs11.c build/.mbedtls-ok
	$(CC) $(WARN) -Wno-unused-function -O2 -g -DK2P_TEST -I. -Itests -o $@ tests/bench.c $(LIBS)

check:
	@sh dist/deps.sh --deb
	@$(MAKE) kmip2pkcs11 kmip2pkcs11-static build/kmip2pkcs11-asan build/kmip2pkcs11-nothreads $(UNIT) build/nullp11.so build/vendorp11.so build/fuzz_ttlv_replay build/fuzz_cfg_replay \
		build/fuzz_op_replay build/e2e
	@mkdir -p build/logs
	@sh dist/make-deb.sh --if-changed > build/logs/make-deb.log 2>&1 || \
		{ echo "make deb failed (build/logs/make-deb.log):"; tail -n 5 build/logs/make-deb.log; }
	@sh tests/run-all.sh

# With the host's compiler ./kmip2pkcs11-static, with a cross compiler only
# build/<triplet>/kmip2pkcs11-static.
static: $(XB)/kmip2pkcs11-static
	@host=`cc -dumpmachine 2>/dev/null`; \
	if [ "$(TARGET)" = "$$host" ]; then cp $(XB)/kmip2pkcs11-static kmip2pkcs11-static; \
		echo "built ./kmip2pkcs11-static"; else echo "built $(XB)/kmip2pkcs11-static"; fi

# The compiler and flags of this target's builds: a change rebuilds them.
$(XB)/.flags: FORCE
	@mkdir -p $(XB)
	@echo '$(CC) $(STATIC_CFLAGS) $(STATIC_LDFLAGS) $(LDFLAGS) $(MBEDTLS_CFLAGS)' > $@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi
FORCE:

$(MBEDTLS_STATIC)/.stamp: dist/mbedtls-config.h dist/build-mbedtls.sh $(XB)/.flags
	CC="$(CC)" MBEDTLS_CFLAGS="$(MBEDTLS_CFLAGS)" sh dist/build-mbedtls.sh build $(MBEDTLS_STATIC)

MBEDTLS_CFLAGS = $(SIZE_OPT) -flto=auto -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables \
	-fno-unwind-tables $(ARCH_CFLAGS) $(MBEDTLS_ARCH_CFLAGS) $(LFS)
# x86-64: AES-NI through intrinsics (aesni.c's alternative, assembly, breaks under -flto:
# numeric asm labels across LTO partitions).  The instructions run only where the CPU
# has them (Mbed TLS checks at run time).
MBEDTLS_ARCH_CFLAGS != case "$(TARGET)" in x86_64*) echo "-maes -mpclmul" ;; esac

# The binary of this compiler's target, and for the host's compiler the copy that the
# tests and `make install` know as ./kmip2pkcs11-static.
$(XB)/kmip2pkcs11-static: kmip2pkcs11.c pkcs11/pkcs11.h $(MBEDTLS_STATIC)/.stamp $(XB)/.flags
	$(CC) $(STATIC_CFLAGS) $(CPPFLAGS) -I$(MBEDTLS_STATIC)/include -I. \
		-o $(XB)/kmip2pkcs11-static.full kmip2pkcs11.c \
		$(STATIC_LDFLAGS) $(LDFLAGS) $(STATIC_LIBS)
	cp $(XB)/kmip2pkcs11-static.full $@
	$(STRIP) $@

kmip2pkcs11-static: $(XB)/kmip2pkcs11-static
	cp $(XB)/kmip2pkcs11-static $@

size: $(XB)/kmip2pkcs11-static
	@s=`wc -c < $(XB)/kmip2pkcs11-static`; \
	awk -v s="$$s" -v t="$(TARGET)" 'BEGIN { printf "%s kmip2pkcs11-static: %d bytes = %.1f KiB stripped (budget 300 KiB)\n", t, s, s / 1024 }'
	@$(SIZE) $(XB)/kmip2pkcs11-static.full
	@echo "20 largest symbols (bytes, type, name):"
	@$(NM) --size-sort -S -r $(XB)/kmip2pkcs11-static.full | head -n 20 | \
	while read addr sz type name; do printf '%8d %s %s\n' "0x$$sz" "$$type" "$$name"; done

# ---- Cross builds tested under qemu-user: make cross-check CROSS=<triplet> -------------
# The unit tests, the operation tests, the test module and the static daemon, built for
# the target with CC=<triplet>-gcc into build/<triplet>; the tests link an Mbed TLS
# cross-built with the library's default configuration (tests/mbedtls-test-config.h),
# since they need its TLS client.  tests/cross.sh runs them under qemu.
XMBEDTLS  = $(XB)/mbedtls-test
XTFLAGS   = $(WARN) -Wno-unused-function -g -O1 -DK2P_TEST -I$(XMBEDTLS)/include -I. -Itests \
	-DNULLP11='"$(XB)/nullp11.so"'
XTLIBS    = $(XMBEDTLS)/lib/libmbedtls.a $(XMBEDTLS)/lib/libmbedx509.a \
	$(XMBEDTLS)/lib/libmbedcrypto.a $(ATOMIC_LIB) -ldl -lpthread
XTDEPS    = kmip2pkcs11.c pkcs11/pkcs11.h tests/check.h tests/kreq.h $(XMBEDTLS)/.stamp
XUNIT     = $(XB)/test_ttlv $(XB)/test_cfg $(XB)/test_p11 $(XB)/test_tls $(XB)/test_op

$(XMBEDTLS)/.stamp: tests/mbedtls-test-config.h dist/build-mbedtls.sh
	CC="$(CC)" MBEDTLS_CONFIG=tests/mbedtls-test-config.h MBEDTLS_CFLAGS="-O2 $(LFS)" \
		sh dist/build-mbedtls.sh build $(XMBEDTLS)

$(XB)/test_ttlv: tests/test_ttlv.c $(XTDEPS)
	$(CC) $(XTFLAGS) -o $@ tests/test_ttlv.c $(XTLIBS)

$(XB)/test_cfg: tests/test_cfg.c $(XTDEPS)
	$(CC) $(XTFLAGS) -o $@ tests/test_cfg.c $(XTLIBS)

$(XB)/test_p11: tests/test_p11.c tests/p11test.h dist/softhsm-token.sh $(XTDEPS)
	$(CC) $(XTFLAGS) -o $@ tests/test_p11.c $(XTLIBS)

$(XB)/test_tls: tests/test_tls.c tests/kclient.h $(XTDEPS)
	$(CC) $(XTFLAGS) -o $@ tests/test_tls.c $(XTLIBS)

$(XB)/test_op: tests/test_op.c tests/p11test.h dist/softhsm-token.sh $(XTDEPS)
	$(CC) $(XTFLAGS) -o $@ tests/test_op.c $(XTLIBS)

$(XB)/nullp11.so: tests/nullp11.c pkcs11/pkcs11.h
	@mkdir -p $(XB)
	$(CC) $(WARN) -O2 -g -shared -fPIC -I. -o $@ tests/nullp11.c

cross-build: $(XB)/kmip2pkcs11-static $(XUNIT) $(XB)/nullp11.so

cross-check:
	@[ -n "$(CROSS)" ] || { echo "usage: make cross-check CROSS=<triplet>, e.g. mips-linux-gnu" >&2; exit 2; }
	@sh dist/deps.sh --cross $(CROSS)
	@$(MAKE) build/e2e
	@$(MAKE) CC=$(CROSS)-gcc cross-build
	@sh tests/cross.sh $(CROSS)

# Each target runs FUZZTIME seconds; what it finds goes to build/corpus-NAME, the committed
# seeds in tests/corpus/NAME are only read.  Keep what is worth keeping with
#   build/fuzz_NAME -merge=1 tests/corpus/NAME build/corpus-NAME
FUZZFLAGS = $(WARN) -Wno-unused-function -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -DK2P_TEST -DK2P_FUZZ -I. -Itests
FUZZRUN   = -max_total_time=$(FUZZTIME) -print_final_stats=1

fuzz: build/.mbedtls-ok build/nullp11.so
	$(CLANG) $(FUZZFLAGS) -o build/fuzz_ttlv tests/fuzz_ttlv.c $(LIBS)
	$(CLANG) $(FUZZFLAGS) -o build/fuzz_cfg tests/fuzz_cfg.c $(LIBS)
	$(CLANG) $(FUZZFLAGS) -o build/fuzz_op tests/fuzz_op.c $(LIBS)
	mkdir -p build/corpus-ttlv build/corpus-cfg build/corpus-op
	build/fuzz_ttlv $(FUZZRUN) build/corpus-ttlv tests/corpus/ttlv
	build/fuzz_cfg $(FUZZRUN) -dict=tests/cfg.dict build/corpus-cfg tests/corpus/cfg
	build/fuzz_op $(FUZZRUN) build/corpus-op tests/corpus/op

demo:
	@sh dist/demo.sh

demo-clean:
	rm -rf demo

# The Debian package (debian/), built from a copy of the tree in build/deb with
# dpkg-buildpackage, then checked by lintian (build/deb/lintian.txt).
deb:
	@sh dist/deps.sh --deb
	@$(MAKE) static
	@sh dist/make-deb.sh

# The units name the installed binary: generated for PREFIX (a package: PREFIX=/usr).
PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
units:
	@mkdir -p build
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/kmip2pkcs11.service.in > build/kmip2pkcs11.service
	cp dist/kmip2pkcs11.socket build/kmip2pkcs11.socket

install: kmip2pkcs11 units
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/doc/kmip2pkcs11 $(DESTDIR)$(UNITDIR)
	install -m 0755 kmip2pkcs11 $(DESTDIR)$(SBINDIR)/kmip2pkcs11
	install -m 0644 dist/kmip2pkcs11.8 $(DESTDIR)$(PREFIX)/share/man/man8/kmip2pkcs11.8
	install -m 0644 config.example README.md $(DESTDIR)$(PREFIX)/share/doc/kmip2pkcs11/
	install -m 0644 build/kmip2pkcs11.service build/kmip2pkcs11.socket $(DESTDIR)$(UNITDIR)/

bench: kmip2pkcs11 build/bench build/nullp11.so
	@sh tests/bench.sh

# ./demo holds a token with keys someone may use: kept, and said so (make demo-clean).
clean:
	rm -rf build kmip2pkcs11 kmip2pkcs11-static
	@if [ -d demo ]; then echo "kept ./demo (the demo token and its keys): make demo-clean removes it"; fi
