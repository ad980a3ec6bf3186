# loralab: one non-recursive Makefile. Objects under build/, dependencies by -MMD -MP.
#
#   make            the loralab command (build/loralab, linked as ./loralab)
#   make test       the Check suites (tests/test_*.c); SANITIZE=address,undefined and DEBUG=1 work
#   make demo       the main job: dependencies, data, the quickstart sweep, the report
#   make bench      engine benchmarks (results/bench.json)

CC      ?= cc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
# The OpenMP build of OpenBLAS, linked by path: Debian's default libopenblas.so may be the pthread
# build, whose thread pool fights OpenMP's over the same cores (see DESIGN.md, "Performance model").
BLAS_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
BLAS_INC := /usr/include/$(MULTIARCH)/openblas-openmp
PKGS    := sqlite3 yaml-0.1 libcjson

OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -Wpedantic -Wshadow -fopenmp -march=native -MMD -MP
# Paths are formatted into fixed buffers with snprintf, which truncates safely; GCC's guess that a
# path *may* be truncated fires on every such call and says nothing about a real bug.
CFLAGS  += -Wno-format-truncation
CFLAGS  += -I. -Iengine -Iexperiments -Ianalysis -I$(BLAS_INC) $(shell pkg-config --cflags $(PKGS))
LDLIBS  += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -llapack -fopenmp
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm
ifdef WERROR
CFLAGS  += -Werror
endif
ifdef DEBUG
CFLAGS  += -O0 -DLL_DEBUG
endif
ifdef SANITIZE
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDLIBS  += -fsanitize=$(SANITIZE)
endif

BUILD   := build
ENGINE_SRC := $(wildcard engine/*.c)
EXP_SRC    := $(wildcard experiments/*.c)
ANA_SRC    := $(wildcard analysis/*.c)
CLI_SRC    := $(wildcard cli/*.c)
TEST_SRC   := $(wildcard tests/test_*.c)
LIB_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(ENGINE_SRC) $(EXP_SRC) $(ANA_SRC))
CLI_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
TEST_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC)) $(BUILD)/tests/main.o

.PHONY: all test demo bench data clean check-deps fuzz fuzz-long memcheck FORCE
all: loralab

# The flags the objects in $(BUILD) were built with. It changes when they do (SANITIZE=..., DEBUG=1,
# WERROR=1), and every object depends on it, so switching flags rebuilds instead of linking
# sanitizer objects into a plain binary.
FLAGS_STAMP := $(BUILD)/.flags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDLIBS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDLIBS)' > $@

# The git commit the binary is built from (engine/buildinfo.h): rewritten only when HEAD or the
# tree's cleanliness changes, so an unchanged checkout rebuilds nothing.
GITREV := $(BUILD)/gitrev.h
$(GITREV): FORCE
	@mkdir -p $(BUILD)
	@rev=$$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown); \
	 line="#define LORALAB_GIT \"$$rev\""; \
	 echo "$$line" | cmp -s - $@ || echo "$$line" > $@
$(BUILD)/engine/buildinfo.o: $(GITREV)
$(BUILD)/engine/buildinfo.o: CFLAGS += -I$(BUILD)

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libloralab.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/loralab: $(CLI_OBJ) $(BUILD)/libloralab.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

loralab: $(BUILD)/loralab
	ln -sf $(BUILD)/loralab loralab

# Every tests/test_X.c defines `Suite *X_suite(void)`; the list is generated so that adding a
# test file is all it takes to run it.
$(BUILD)/tests/suites.h: $(TEST_SRC)
	@mkdir -p $(dir $@)
	@grep -ho '^Suite \*[a-z0-9_]*_suite(void)' $(TEST_SRC) | sed 's/^Suite \*\([a-z0-9_]*\)(void)/SUITE(\1)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/tests/main.o: tests/main.c $(BUILD)/tests/suites.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BUILD)/tests $(shell pkg-config --cflags check) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags check) -c $< -o $@

$(BUILD)/test_loralab: $(TEST_OBJ) $(BUILD)/libloralab.a $(BUILD)/loralab
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libloralab.a $(LDLIBS) $(shell pkg-config --libs check)

# SUITE=name runs one suite, CK_RUN_CASE=name one test case (Check's own variable).
test: $(BUILD)/test_loralab loralab
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/test_loralab $(SUITE)

# `make test-slurm`: a one-node SLURM started on this machine (scripts/slurm-local.sh) runs an
# emitted sweep array; scripts/test-slurm.sh says what it checks, or "skipped" and why.
.PHONY: test-slurm
test-slurm: loralab
	scripts/test-slurm.sh

check-deps:
	@scripts/deps.sh

clean:
	rm -rf $(BUILD) loralab

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- benchmarks, data, the main job ----------------------------------------------------------
$(BUILD)/bench: bench/bench.c $(BUILD)/libloralab.a
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libloralab.a $(LDLIBS)

.PHONY: bench
bench: $(BUILD)/bench
	@mkdir -p results
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/bench $(BENCH_STEPS)

data:
	scripts/fetch-data.sh

demo: check-deps
	@[ -f data/brown/.complete ] && [ -f data/sotu/.complete ] || scripts/fetch-data.sh
	$(MAKE) loralab
	./loralab sweep configs/experiments/quickstart.yaml --db results/quickstart.db
	./loralab report --db results/quickstart.db
	@echo "figures and tables: results/report/quickstart/quickstart/index.html (table.md, table.tex, *.pdf, *.png)"

# ---- bench-compare: loralab against PyTorch on the same weights and batch --------------------
# Needs python3 with torch and numpy (scripts/deps.sh --bench); writes results/bench-compare.txt.
$(BUILD)/bench_compare: bench/bench_compare.c $(BUILD)/libloralab.a
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libloralab.a $(LDLIBS)

.PHONY: bench-compare
bench-compare: $(BUILD)/bench_compare
	@mkdir -p results
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} bench/compare.sh $(BENCH_STEPS)

# ---- hardening: sanitizers, fuzzing, valgrind (docs/TESTING.md) ------------------------------
# With SANITIZE set, the test run stops at the first UBSan report (GCC's default is to print and
# go on, which would let a green suite hide one) and keeps LeakSanitizer on explicitly.
ifdef SANITIZE
test: export UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
test: export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:strict_string_checks=1
endif

# `make fuzz FUZZ_SECONDS=N`: every tests/fuzz/fuzz_*.c, built with clang's libFuzzer, ASan and
# UBSan (packages: scripts/deps.sh --fuzz), runs N seconds on a scratch copy of its seed corpus,
# one at a time; tests/fuzz/run.sh prints the table (runs, exec/s, coverage, crashes). The
# targets link the engine, experiments and analysis code (fuzz_report drives analysis/report.c).
# -fopenmp=libgomp compiles the OpenMP pragmas out (the targets run single-threaded) and links
# libgomp, the runtime OpenBLAS already uses, rather than adding clang's libomp beside it.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRC))
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -g -O1 $(FUZZ_SAN) -fopenmp=libgomp -MMD -MP -I. -Iengine -Iexperiments \
                -Ianalysis -I$(BLAS_INC) $(shell pkg-config --cflags $(PKGS))
FUZZ_LDLIBS  := -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -llapack -lgomp \
                $(shell pkg-config --libs $(PKGS)) -lm
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(ENGINE_SRC) $(EXP_SRC) $(ANA_SRC))

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/engine/buildinfo.o: $(GITREV)
$(FUZZ_BUILD)/engine/buildinfo.o: FUZZ_CFLAGS += -I$(BUILD)

$(FUZZ_BUILD)/libloralab_fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libloralab_fuzz.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LDLIBS)

fuzz: $(FUZZ_BINS)
	OMP_NUM_THREADS=1 tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(patsubst $(FUZZ_BUILD)/fuzz_%,%,$(FUZZ_BINS))

# `make fuzz-long`: the same targets, each until FUZZ_LONG_RUNS executions (10^7) or
# FUZZ_LONG_SECONDS (600), whichever comes first, on a corpus kept between runs in
# FUZZ_CORPUS/<target>/ (tests/fuzz/corpus, git-ignored: libFuzzer's working set is thousands of
# machine-made files that change with every run and every change of the code's coverage; the seeds
# that matter are committed in tests/fuzz/<target>/, the crashes in tests/fuzz/regressions/).
# One target at a time: 7 x 10 min here. FUZZ_LONG_TARGETS picks some ("report yaml_run").
FUZZ_LONG_SECONDS ?= 600
FUZZ_LONG_RUNS    ?= 10000000
FUZZ_CORPUS       ?= tests/fuzz/corpus
FUZZ_LONG_TARGETS ?= $(patsubst $(FUZZ_BUILD)/fuzz_%,%,$(FUZZ_BINS))
fuzz-long: $(FUZZ_BINS)
	OMP_NUM_THREADS=1 tests/fuzz/run.sh --corpus $(FUZZ_CORPUS) --runs $(FUZZ_LONG_RUNS) $(FUZZ_BUILD) \
	    $(FUZZ_LONG_SECONDS) $(FUZZ_LONG_TARGETS)

# `make memcheck`: the Check suites under valgrind memcheck, one suite per valgrind process, in
# fork mode (valgrind follows fork(); a child with an error exits 1 and Check fails its test).
# Its own build (build/memcheck) without -march=native: valgrind 3.19 cannot decode AVX-512.
# Binaries the tests exec (build/loralab, gnuplot, chromium, sh) run natively. The verdict is
# valgrind's: any error report (invalid access, uninitialised value, definite leak) fails the
# target; a test that fails under valgrind without one is listed as a warning (Check's timeouts
# are stretched by CK_TIMEOUT_MULTIPLIER; valgrind's CPU has no AVX-512, so OpenBLAS runs other
# kernels than natively). LORALAB_SKIP_SLOW=1 skips the suites in MEMCHECK_SLOW (e2e trains real
# models through the binary, which valgrind does not follow anyway); memcheck alone reads it.
# tests/valgrind.supp says what it suppresses and why. Logs: build/memcheck/logs.
MEMCHECK_BUILD  := $(BUILD)/memcheck
MEMCHECK_CFLAGS := $(filter-out -march=native -fsanitize=%,$(CFLAGS)) -march=x86-64-v3
MEMCHECK_SLOW   ?= e2e
VALGRIND ?= valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --num-callers=30 --suppressions=tests/valgrind.supp

memcheck: loralab
	$(MAKE) SANITIZE= BUILD=$(MEMCHECK_BUILD) CFLAGS='$(MEMCHECK_CFLAGS)' $(MEMCHECK_BUILD)/test_loralab
	@logs=$(MEMCHECK_BUILD)/logs; rm -rf $$logs; mkdir -p $$logs; bad=""; warn=""; \
	for s in $$(sed -n 's/^SUITE(\(.*\)_suite)$$/\1/p' $(MEMCHECK_BUILD)/tests/suites.h); do \
	  case " $(MEMCHECK_SLOW) " in *" $$s "*) if [ -n "$${LORALAB_SKIP_SLOW:-}" ] && \
	    [ "$$LORALAB_SKIP_SLOW" != 0 ]; then echo "memcheck: $$s: skipped (LORALAB_SKIP_SLOW)"; continue; fi ;; esac; \
	  t0=$$(date +%s); \
	  CK_TIMEOUT_MULTIPLIER=$${CK_TIMEOUT_MULTIPLIER:-30} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
	    $(VALGRIND) --log-file=$$logs/$$s.%p.log ./$(MEMCHECK_BUILD)/test_loralab $$s >$$logs/$$s.out 2>&1; \
	  rc=$$?; errs=$$(find $$logs -name "$$s.*.log" -size +0 | wc -l); \
	  echo "memcheck: $$s: $$(( $$(date +%s) - t0 )) s, $$(grep -h 'Checks:' $$logs/$$s.out | tail -n 1)," \
	       "processes with valgrind errors: $$errs"; \
	  if [ "$$errs" -ne 0 ]; then bad="$$bad $$s"; find $$logs -name "$$s.*.log" -size +0 -exec cat {} +; \
	  elif [ "$$rc" -ne 0 ]; then warn="$$warn $$s"; grep -E '^[^ ]+:[0-9]+:[EF]:' $$logs/$$s.out; fi; \
	done; \
	[ -z "$$warn" ] || echo "memcheck: warning: tests failed under valgrind without a memory error in:$$warn"; \
	if [ -n "$$bad" ]; then echo "memcheck: valgrind errors in:$$bad"; exit 1; fi; \
	echo "memcheck: no valgrind errors"

# the fuzz targets' objects are made by a chain of pattern rules: keep them between runs
.SECONDARY: $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/tests/fuzz/%.o,$(FUZZ_SRC))
