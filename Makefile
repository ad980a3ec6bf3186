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

.PHONY: all test demo bench data clean check-deps
all: loralab

$(BUILD)/%.o: %.c
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

$(BUILD)/tests/main.o: tests/main.c $(BUILD)/tests/suites.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BUILD)/tests $(shell pkg-config --cflags check) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags check) -c $< -o $@

$(BUILD)/test_loralab: $(TEST_OBJ) $(BUILD)/libloralab.a $(BUILD)/loralab
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libloralab.a $(LDLIBS) $(shell pkg-config --libs check)

# SUITE=name runs one suite, CK_RUN_CASE=name one test case (Check's own variable).
test: $(BUILD)/test_loralab loralab
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/test_loralab $(SUITE)

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
	./loralab report --db results/quickstart.db --out results/report/quickstart
	@echo "figures and tables: results/report/quickstart/index.html (table.md, table.tex, *.pdf, *.png)"

# ---- bench-compare: loralab against PyTorch on the same weights and batch --------------------
# Needs python3 with torch and numpy (scripts/deps.sh --bench); writes results/bench-compare.txt.
$(BUILD)/bench_compare: bench/bench_compare.c $(BUILD)/libloralab.a
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libloralab.a $(LDLIBS)

.PHONY: bench-compare
bench-compare: $(BUILD)/bench_compare
	@mkdir -p results
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} bench/compare.sh $(BENCH_STEPS)
