# kmip2pkcs11 - plain POSIX make.  `make help` lists the targets.

CC       ?= cc
CLANG    ?= clang
CFLAGS   ?= -O2 -g
PYTHON   ?= /usr/bin/python3
WARN      = -std=c99 -Wall -Wextra -Wshadow -Wformat=2 -Werror
LIBS      = -lmbedtls -lmbedx509 -lmbedcrypto -ldl -lpthread
SAN       = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
TFLAGS    = $(WARN) -Wno-unused-function -g -O1 $(SAN) -DK2P_TEST -I. -Itests
FUZZTIME ?= 60
STRIP    ?= strip

# make static: Mbed TLS built from its release source with dist/mbedtls-config.h
MBEDTLS_STATIC = build/mbedtls-static
STATIC_CFLAGS  = -std=c99 -Os -ffunction-sections -fdata-sections \
	-fno-asynchronous-unwind-tables -fno-unwind-tables \
	-Wall -Wextra -Wshadow -Wformat=2 -Werror -DK2P_STATIC_MBEDTLS
STATIC_LDFLAGS = -Wl,--gc-sections -Wl,--as-needed
STATIC_LIBS    = $(MBEDTLS_STATIC)/lib/libmbedtls.a $(MBEDTLS_STATIC)/lib/libmbedx509.a \
	$(MBEDTLS_STATIC)/lib/libmbedcrypto.a -ldl -lpthread

UNIT      = build/test_ttlv build/test_cfg build/test_p11 build/test_tls build/test_op
TOOLS     = build/nullp11.so build/vendorp11.so build/fuzz_ttlv_replay build/e2e build/bench

all: kmip2pkcs11

.PHONY: all help check static size fuzz demo demo-clean units install bench clean

help:
	@echo "make            build ./kmip2pkcs11 against the system Mbed TLS (3.6 or newer)"
	@echo "make check      install what is missing, build, run every test; last line N passed, N failed"
	@echo "make demo       install what is missing, make a SoftHSM2 token, serve KMIP on 127.0.0.1:5696"
	@echo "                (DEMO_PORT=N for another port; the token in ./demo is kept between runs)"
	@echo "make demo-clean remove ./demo: the demo token, its keys, configuration and certificate"
	@echo "make fuzz       run the libFuzzer targets (clang) for FUZZTIME=$(FUZZTIME) seconds each"
	@echo "make bench      sign/latency/memory benchmarks against the in-process PKCS#11 baseline"
	@echo "make static     ./kmip2pkcs11-static: Mbed TLS built in with dist/mbedtls-config.h"
	@echo "make size       stripped size of the static build and its largest symbols"
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
	@sh dist/deps.sh --source
	@$(MAKE) kmip2pkcs11 kmip2pkcs11-static build/kmip2pkcs11-asan $(UNIT) build/nullp11.so build/vendorp11.so build/fuzz_ttlv_replay build/fuzz_cfg_replay \
		build/fuzz_op_replay build/e2e
	@sh tests/run-all.sh

static: kmip2pkcs11-static

$(MBEDTLS_STATIC)/.stamp: dist/mbedtls-config.h dist/build-mbedtls.sh
	CC="$(CC)" sh dist/build-mbedtls.sh build

kmip2pkcs11-static: kmip2pkcs11.c pkcs11/pkcs11.h $(MBEDTLS_STATIC)/.stamp
	$(CC) $(STATIC_CFLAGS) $(CPPFLAGS) -I$(MBEDTLS_STATIC)/include -I. \
		-o build/kmip2pkcs11-static.full kmip2pkcs11.c \
		$(STATIC_LDFLAGS) $(LDFLAGS) $(STATIC_LIBS)
	cp build/kmip2pkcs11-static.full $@
	$(STRIP) $@

size: kmip2pkcs11-static
	@s=`wc -c < kmip2pkcs11-static`; \
	awk -v s="$$s" 'BEGIN { printf "kmip2pkcs11-static: %d bytes = %.1f KiB stripped (budget 300 KiB)\n", s, s / 1024 }'
	@size build/kmip2pkcs11-static.full
	@echo "20 largest symbols (bytes, type, name):"
	@nm --size-sort -S -r build/kmip2pkcs11-static.full | head -n 20 | \
	while read addr sz type name; do printf '%8d %s %s\n' "0x$$sz" "$$type" "$$name"; done

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
