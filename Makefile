# CouncilEx native: top-level build.
#
#   make            build everything into priv/ (libraries, C node, demo)
#   make test       install missing Debian packages, then run every suite:
#                   C suites (cmocka), the same under ASan+UBSan (clang),
#                   and the ExUnit suites against real BEAM nodes
#   make demo       the main job: a live council run (Elixir library + C node)
#   make demo-native  the same through the native C API
#   make demo-llm   a council of real models (keys from the environment)
#   make valgrind   the C suites under valgrind
#   make fuzz       libFuzzer: ETF, handshake, JSON, request handlers, specs (FUZZ_SECONDS=60)
#   make bench      benchmarks against a BEAM baseline (bench/)
#   make install PREFIX=/usr/local   headers, libraries, pkg-config file
#
# Layout: c_src/core (no BEAM), c_src/cnode (distribution), c_src/include
# (the one public header). Objects go to $(B); release artifacts to priv/.

SAN ?= 0
ifeq ($(SAN),1)
  CC := clang
  B ?= build/asan
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
         -fno-sanitize-recover=all
  LDSAN := -fsanitize=address,undefined
else
  CC ?= cc
  B ?= build/release
  OPT := -O2 -g
  LDSAN :=
endif

# erl_interface: where the `erl` on PATH has it (code:lib_dir/1, then
# code:root_dir()/lib), so that asdf, kerl and source installs of OTP build
# too; Debian's /usr/lib/erlang last. Found once, then passed to sub-makes.
# `make EI_DIR=...` overrides it; `make erl-interface` prints it.
ERL ?= erl
ifndef EI_DIR
  EI_DIR := $(shell $(ERL) -noshell -eval 'case code:lib_dir(erl_interface) of D when is_list(D) -> io:put_chars(D); _ -> ok end, halt().' 2>/dev/null)
  ifeq ($(wildcard $(EI_DIR)/include/ei.h),)
    EI_DIR := $(firstword $(wildcard $(shell $(ERL) -noshell -eval 'io:put_chars(code:root_dir()), halt().' 2>/dev/null)/lib/erl_interface-*) \
                          $(wildcard /usr/lib/erlang/lib/erl_interface-*))
  endif
  export EI_DIR
endif
EI_CFLAGS := -I$(EI_DIR)/include
EI_LIBS := -L$(EI_DIR)/lib -lei

DEPS_PC := libuv libsodium jansson libcurl
PC_CFLAGS := $(shell pkg-config --cflags $(DEPS_PC) 2>/dev/null)
PC_LIBS := $(shell pkg-config --libs $(DEPS_PC) 2>/dev/null)

# Quiet by default: one short line per file built (none under make -s);
# V=1 shows each command instead.
ifeq ($(V),1)
  say :=
else
  say = @$(if $(findstring s,$(firstword -$(MAKEFLAGS))),,printf '  %-5s %s\n' '$(1)' '$(2)';)
endif

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -fPIC -pthread \
              -Ic_src/include -Ic_src/core $(PC_CFLAGS) $(CFLAGS)
LIBS := $(PC_LIBS) -lm -pthread

CORE_SRC := $(sort $(wildcard c_src/core/*.c))
CNODE_SRC := $(sort $(wildcard c_src/cnode/*.c))
CNODE_LIB_SRC := $(filter-out c_src/cnode/main.c,$(CNODE_SRC))
CORE_OBJ := $(CORE_SRC:%.c=$(B)/%.o)
CNODE_OBJ := $(CNODE_SRC:%.c=$(B)/%.o)
CNODE_LIB_OBJ := $(CNODE_LIB_SRC:%.c=$(B)/%.o)

TEST_SRC := $(sort $(wildcard test/c/test_*.c))
TEST_BIN := $(TEST_SRC:test/c/%.c=$(B)/test/%)
TEST_HELPERS := $(sort $(wildcard test/c/helpers/*.c))
TEST_HELPER_BIN := $(TEST_HELPERS:test/c/helpers/%.c=$(B)/test/helpers/%)

EXAMPLES := $(sort $(wildcard examples/*.c))
EXAMPLE_BIN := $(EXAMPLES:examples/%.c=$(B)/examples/%)

# What a user of the library needs (Mix and rebar3 build only this: no
# test framework required); `all` adds the test programs.
PRIV := priv/libcouncil.a priv/libcouncil.so priv/council_node priv/schema.json \
        priv/council_nif.so \
        $(EXAMPLE_BIN:$(B)/examples/%=priv/%)
ifeq ($(SAN),1)
  ARTIFACTS := $(B)/libcouncil.a $(B)/council_node $(B)/council_nif.so $(TEST_BIN) \
               $(TEST_HELPER_BIN) $(EXAMPLE_BIN)
else
  ARTIFACTS := $(PRIV) $(TEST_BIN) $(TEST_HELPER_BIN)
endif

.PHONY: all priv deps erl-interface test test-c test-c-asan test-beam demo demo-native demo-llm valgrind fuzz bench bench-smoke \
        install clean check-headers check-exports
.DEFAULT_GOAL := all

all: $(ARTIFACTS)

priv: $(PRIV)

# Where erl_interface was found (see EI_DIR above).
erl-interface:
	@echo $(EI_DIR)

deps:
	@./scripts/deps

# The core is built with hidden visibility: the shared library exports the
# functions council.h marks COUNCIL_API and nothing else (check-exports).
$(B)/c_src/core/%.o: c_src/core/%.c $(wildcard c_src/include/*.h c_src/core/*.h) Makefile
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CFLAGS_ALL) -fvisibility=hidden -c $< -o $@

# The C node sees the core only through its public headers (c_src/include):
# no -Ic_src/core here.
CNODE_CFLAGS = $(filter-out -Ic_src/core,$(CFLAGS_ALL)) $(EI_CFLAGS)
$(B)/c_src/cnode/%.o: c_src/cnode/%.c $(wildcard c_src/include/*.h c_src/cnode/*.h) Makefile
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CNODE_CFLAGS) -c $< -o $@

$(B)/libcouncil.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

# ABI version: the SONAME's number changes when council.h breaks binary
# compatibility; the full version follows the project's.
SO_MAJOR := 0
SO_VERSION := 0.1.0
$(B)/libcouncil.so: $(CORE_OBJ)
	$(call say,LD,$@)$(CC) -shared -Wl,-soname,libcouncil.so.$(SO_MAJOR) -o $@ $^ $(LIBS) $(LDSAN)

$(B)/council_node: $(CNODE_OBJ) $(B)/libcouncil.a
	$(call say,LD,$@)$(CC) -o $@ $(CNODE_OBJ) $(B)/libcouncil.a $(EI_LIBS) $(LIBS) $(LDSAN)

$(B)/examples/%: examples/%.c $(B)/libcouncil.a c_src/include/council.h
	@mkdir -p $(dir $@)
	$(call say,CCLD,$@)$(CC) $(CFLAGS_ALL) $< -o $@ $(B)/libcouncil.a $(LIBS) $(LDSAN)

# Test binaries link the core and the C node's objects (all but main.c).
# test_alloc fails the core's allocations one by one: it wraps them.
TEST_LDFLAGS_test_alloc := -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc \
                           -Wl,--wrap=strdup
# Suites see the core through council.h only, except the white-box ones
# below, which test the core's internals (tallies, scanner, pub/sub,
# registry, timers...) and say at their top why they need them.
TEST_WHITEBOX := test_ballot test_beam_tools test_event_term test_json_scan test_llm \
                 test_providers test_pubsub test_registry test_rounds test_run test_spec \
                 test_sse test_timer
TEST_CFLAGS = $(filter-out -Ic_src/core,$(CFLAGS_ALL)) \
              $(if $(filter $*,$(TEST_WHITEBOX)),-Ic_src/core)
$(B)/test/%: test/c/%.c $(B)/libcouncil.a $(CNODE_LIB_OBJ) $(wildcard test/c/*.h)
	@mkdir -p $(dir $@)
	$(call say,CCLD,$@)$(CC) $(TEST_CFLAGS) $(EI_CFLAGS) -Itest/c $< -o $@ $(CNODE_LIB_OBJ) \
	  $(B)/libcouncil.a $(EI_LIBS) $(LIBS) -lcmocka $(LDSAN) $(TEST_LDFLAGS_$*)

# Test helpers may use OpenSSL (the fake model server speaks TLS).
$(B)/test/helpers/%: test/c/helpers/%.c
	@mkdir -p $(dir $@)
	$(call say,CCLD,$@)$(CC) $(CFLAGS_ALL) $< -o $@ -lssl -lcrypto -pthread $(LDSAN)

# The NIF backend (c_src/nif): the core and the C node's term encoders in
# one shared object the VM loads (config :council_ex, backend: :nif). It
# takes only what it uses from the C node (the encoders event_term,
# term_json, spec_cache and their term helpers; the error reasons; the
# hash table; a run's topic), so the node's other files do not reach it;
# like the node, it sees the core through c_src/include only.
ERTS_INCLUDE := $(firstword $(wildcard /usr/lib/erlang/erts-*/include) /usr/lib/erlang/usr/include)
NIF_SRC := $(sort $(wildcard c_src/nif/*.c))
NIF_OBJ := $(NIF_SRC:%.c=$(B)/%.o)
NIF_CNODE_OBJ := $(addprefix $(B)/c_src/cnode/,event_term.o term_json.o term.o term_check.o \
                   spec_cache.o reasons.o hashtab.o run_topic.o)
$(B)/c_src/nif/%.o: c_src/nif/%.c $(wildcard c_src/include/*.h c_src/cnode/*.h c_src/nif/*.h) Makefile
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(filter-out -Ic_src/core,$(CFLAGS_ALL)) -fvisibility=hidden \
	  -Ic_src/cnode -I$(ERTS_INCLUDE) $(EI_CFLAGS) -c $< -o $@

$(B)/council_nif.so: $(NIF_OBJ) $(NIF_CNODE_OBJ) $(B)/libcouncil.a c_src/nif/exports.map
	$(call say,LD,$@)$(CC) -shared -Wl,--version-script=c_src/nif/exports.map -o $@ \
	  $(NIF_OBJ) $(NIF_CNODE_OBJ) $(B)/libcouncil.a $(EI_LIBS) $(LIBS) $(LDSAN)

# The core's rules as data (council_schema_json), read by lib/ at compile time.
# With the BEAM hosts' error reasons and call exits (c_src/cnode/reasons.c).
$(B)/schema_dump: c_src/tools/schema_dump.c c_src/cnode/reasons.c c_src/cnode/reasons.h \
                  $(B)/libcouncil.a c_src/include/council.h
	$(call say,CCLD,$@)$(CC) $(CFLAGS_ALL) -Ic_src/cnode $< c_src/cnode/reasons.c -o $@ \
	  $(B)/libcouncil.a $(LIBS) $(LDSAN)

priv/schema.json: $(B)/schema_dump include/council_schema.hrl
	@mkdir -p priv
	$(call say,GEN,$@)$(B)/schema_dump > $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

# The same values for src/council_ex_raw.erl (rebar3 and Mix read include/).
include/council_schema.hrl: $(B)/schema_dump
	@mkdir -p include
	$(call say,GEN,$@)$(B)/schema_dump --erlang > $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

# Built examples are kept (no `rm` of them after each build).
.SECONDARY: $(EXAMPLE_BIN)

# Copy then rename: a running priv/council_node must not block a rebuild
# (the temporary name is per make process, so two builds do not collide).
priv/%: $(B)/%
	@mkdir -p priv
	$(call say,CP,$@)cp $< $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

priv/%: $(B)/examples/%
	@mkdir -p priv
	$(call say,CP,$@)cp $< $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

# ---------------------------------------------------------------- tests

# The BEAM suites run against the ASan+UBSan build of the C node, so one
# pass checks both behaviour and memory safety of the node.
test: deps
	$(MAKE) all
	$(MAKE) check-exports
	scripts/test-install
	scripts/test-deps
	$(MAKE) test-c
	$(MAKE) SAN=1 all test-c
	$(MAKE) bench-smoke
	COUNCIL_NODE=build/asan/council_node COUNCIL_NIF=build/asan/council_nif $(MAKE) test-beam

test-c: $(TEST_BIN) $(TEST_HELPER_BIN)
	@scripts/run-c-tests $(B)

test-beam: all
	scripts/run-cnode-tests
	scripts/run-beam-tests

valgrind: $(TEST_BIN) $(TEST_HELPER_BIN)
	@VALGRIND=1 scripts/run-c-tests $(B)

demo: deps
	$(MAKE) all
	@scripts/run-elixir-demo

# The same kind of council through the native C API, no BEAM involved.
demo-native: all
	@./priv/native_demo

# A council of real models, one member per provider whose key is set
# (examples/llm_demo.c says which variables it reads).
demo-llm: all
	@./priv/llm_demo

fuzz:
	@scripts/fuzz

# bench/c/*.c -> $(B)/bench/* (bench/run also builds them when missing)
BENCH_BIN := $(patsubst bench/c/%.c,$(B)/bench/%,$(wildcard bench/c/*.c))
$(B)/bench/%: bench/c/%.c $(B)/libcouncil.a c_src/include/council.h
	@mkdir -p $(dir $@)
	$(call say,CCLD,$@)$(CC) $(CFLAGS_ALL) $< -o $@ $(B)/libcouncil.a $(LIBS) $(LDSAN)

bench: deps
	$(MAKE) all $(BENCH_BIN)
	@bench/run

# Every benchmark case runs once with tiny counts (no timing is checked).
bench-smoke: all $(BENCH_BIN)
	QUICK=1 BENCH_PERF=0 bench/run

# ---------------------------------------------------------------- install

PREFIX ?= /usr/local
# Builds what it installs. The shared library is libcouncil.so.$(SO_VERSION)
# with the links libcouncil.so.$(SO_MAJOR) (its SONAME) and libcouncil.so.
install: $(PRIV)
	install -d "$(DESTDIR)$(PREFIX)/include" "$(DESTDIR)$(PREFIX)/lib/pkgconfig" \
	  "$(DESTDIR)$(PREFIX)/bin"
	install -m 644 c_src/include/council.h c_src/include/council_json.h \
	  "$(DESTDIR)$(PREFIX)/include/"
	install -m 644 priv/libcouncil.a "$(DESTDIR)$(PREFIX)/lib/"
	install -m 755 priv/libcouncil.so "$(DESTDIR)$(PREFIX)/lib/libcouncil.so.$(SO_VERSION)"
	ln -sf libcouncil.so.$(SO_VERSION) "$(DESTDIR)$(PREFIX)/lib/libcouncil.so.$(SO_MAJOR)"
	ln -sf libcouncil.so.$(SO_MAJOR) "$(DESTDIR)$(PREFIX)/lib/libcouncil.so"
	install -m 755 priv/council_node "$(DESTDIR)$(PREFIX)/bin/"
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(SO_VERSION)|g' council.pc.in \
	  > "$(DESTDIR)$(PREFIX)/lib/pkgconfig/council.pc"

# The shared library exports exactly the functions of the public headers.
check-exports: priv/libcouncil.so
	@scripts/check-exports priv/libcouncil.so c_src/include/council.h \
	  c_src/include/council_json.h

clean:
	rm -rf build priv _build
