# Soarix Nexus — one non-recursive Makefile; everything it builds goes under $(BUILD).
#
#   make deps    install the Debian packages that are missing (idempotent; sudo when not root)
#   make         build the libraries, nexusctl, the tests and the benchmarks
#   make test    deps + build + llama-ref + openai-client + ajv + every test: the cmocka unit
#                tests and the Python tests (with the comparison against llama.cpp), the CUDA
#                code on the CPU emulation of tests/cuemu (make emu-test), the suite under
#                ASan+UBSan (make asan), the threaded tests under TSan (make tsan) and each
#                libFuzzer target for 12 s (make fuzz-smoke); in two lanes (see test-lanes)
#   make bench   run the benchmarks (bench/RESULTS.md records their figures); make bench-quant:
#                only ours beside llama.cpp on GGUF files; make bench-pull: nexusctl pull
#                beside curl
#   make run     synthesize the tiny demo models if missing, run nexusd in the foreground
#
# CUDA is optional: with nvcc (on PATH or in $(CUDA_HOME)/bin) the CUDA backend is built and the
# CUDA runtime is linked statically, so a machine without a driver still starts (and uses the
# CPU backend). `make CUDA=0` builds without it.

BUILD ?= build
CC ?= cc
CUDA_HOME ?= /usr/local/cuda
PYTHON ?= /usr/bin/python3

OPT ?= -O2
CFLAGS_BASE := -std=gnu11 -D_GNU_SOURCE -g $(OPT) -fPIC -pthread \
	-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Iloader -Iagents -Inexus -Inexus/hub
LIBS := -lczmq -lzmq -lmicrohttpd -lmsgpackc -lsqlite3 -lyaml -ljansson -lxxhash -lpcre2-8 \
	-lutf8proc -lcurl -lcrypto -luring -lpthread -lm -ldl -lrt

ifeq ($(CUDA),0)
NVCC :=
else
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc; })
endif

# Files named *_cuda.c (host code calling the CUDA runtime) and *.cu are built only with CUDA;
# each has a *_nocuda.c stand-in that says the backend is absent, built only without it.
CUDA_ONLY_C := $(wildcard loader/*_cuda.c agents/*_cuda.c)
NOCUDA_C := $(wildcard loader/*_nocuda.c agents/*_nocuda.c)
LOADER_ALL := $(filter-out $(CUDA_ONLY_C) $(NOCUDA_C),$(wildcard loader/*.c))
AGENTS_ALL := $(filter-out $(CUDA_ONLY_C) $(NOCUDA_C),$(wildcard agents/*.c))
NEXUS_MAINS := nexus/nexusctl.c $(wildcard nexus/nexusd.c)
NEXUS_SRC := $(filter-out $(NEXUS_MAINS),$(wildcard nexus/*.c nexus/hub/*.c nexus/http/*.c))
CU_SRC := $(wildcard loader/*.cu agents/*.cu)

ifeq ($(CUEMU),1)
# The build for `make emu-test` (tests/cuemu: a CPU emulation of the CUDA subset this project
# uses; it checks index arithmetic, barriers and host orchestration, not the hardware, not
# speed). The CUDA sources are built by the C++ compiler against the emulator's device header
# and linked with its runtime, driver and cuBLAS instead of libcudart; CUDA's headers only.
WITH_CUDA := 1
LOADER_SRC := $(LOADER_ALL) $(filter loader/%,$(CUDA_ONLY_C))
AGENTS_SRC := $(AGENTS_ALL) $(filter agents/%,$(CUDA_ONLY_C))
CUDA_CFLAGS := -I$(CUDA_HOME)/include -DNX_CUEMU
CUEMU_CXXFLAGS := -std=gnu++17 -DNX_CUEMU -g $(OPT) -fPIC -pthread -Wall -Wextra -Werror \
	-Wno-unused-parameter -Wno-missing-field-initializers -Wno-unknown-pragmas \
	-Wno-class-memaccess -Iloader -Iagents -Itests/cuemu -I$(CUDA_HOME)/include
CUEMU_SRC := $(wildcard tests/cuemu/cuemu_*.cc)
CUEMU_LIB := $(BUILD)/libcuemu.a
CUDA_LIBS := $(CUEMU_LIB) -lstdc++
# a misaligned vector load (float4, uint4) faults on a GPU: here it traps (SIGILL), which the
# emulator reports as cudaErrorMisalignedAddress
CU_COMPILE = $(CXX) $(CUEMU_CXXFLAGS) -fsanitize=alignment -fsanitize-undefined-trap-on-error \
	-MMD -MP -x c++
else ifneq ($(NVCC),)
WITH_CUDA := 1
LOADER_SRC := $(LOADER_ALL) $(filter loader/%,$(CUDA_ONLY_C))
AGENTS_SRC := $(AGENTS_ALL) $(filter agents/%,$(CUDA_ONLY_C))
CUDA_CFLAGS := -I$(CUDA_HOME)/include
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -lstdc++
NVCCFLAGS ?= -O2 -g -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 \
	-Xcompiler -fPIC -Iloader -Iagents
CU_COMPILE = $(NVCC) $(NVCCFLAGS)
else
WITH_CUDA := 0
LOADER_SRC := $(LOADER_ALL) $(filter loader/%,$(NOCUDA_C))
AGENTS_SRC := $(AGENTS_ALL) $(filter agents/%,$(NOCUDA_C))
CU_SRC :=
endif

CFLAGS := $(CFLAGS_BASE) $(CUDA_CFLAGS) $(EXTRA_CFLAGS)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LOADER_OBJ := $(call obj,$(LOADER_SRC))
AGENTS_OBJ := $(call obj,$(AGENTS_SRC))
NEXUS_OBJ := $(call obj,$(NEXUS_SRC))
LOADER_CU_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(filter loader/%,$(CU_SRC)))
AGENTS_CU_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(filter agents/%,$(CU_SRC)))

LIB_LOADER := $(BUILD)/libnxloader.a
LIB_AGENTS := $(BUILD)/libnxagents.a
LIB_NEXUS := $(BUILD)/libnxnexus.a
ALL_LIBS := $(LIB_NEXUS) $(LIB_AGENTS) $(LIB_LOADER)
LINK_LIBS := $(ALL_LIBS) $(CUDA_LIBS) $(LIBS)
LINK_DEPS := $(ALL_LIBS) $(CUEMU_LIB)

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TOOL_SRC := $(wildcard tests/tool_*.c)
TOOL_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TOOL_SRC)) $(BUILD)/tests/libnx_fault_ioerr.so
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
NEXUSCTL := $(BUILD)/nexusctl
NEXUSD := $(if $(wildcard nexus/nexusd.c),$(BUILD)/nexusd)

.PHONY: all deps test unit pytest bench bench-quant bench-quant-pair bench-loader-user run clean gpu-bundle asan tsan emu-test \
	asan-run tsan-run emu-run \
	gpu-suite-emu
.DEFAULT_GOAL := all

all: $(NEXUSCTL) $(NEXUSD) $(TEST_BIN) $(TOOL_BIN) $(BENCH_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(CU_COMPILE) -c $< -o $@

$(LIB_LOADER): $(LOADER_OBJ) $(LOADER_CU_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_AGENTS): $(AGENTS_OBJ) $(AGENTS_CU_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_NEXUS): $(NEXUS_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

ifeq ($(CUEMU),1)
$(CUEMU_LIB): $(patsubst %.cc,$(BUILD)/obj/%.o,$(CUEMU_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/tests/cuemu/%.o: tests/cuemu/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CUEMU_CXXFLAGS) -MMD -MP -c $< -o $@
endif

$(NEXUSCTL): $(call obj,nexus/nexusctl.c) $(LINK_DEPS)
	$(CC) $(CFLAGS) -o $@ $< $(LINK_LIBS)

$(BUILD)/nexusd: $(call obj,nexus/nexusd.c) $(LINK_DEPS)
	$(CC) $(CFLAGS) -o $@ $< $(LINK_LIBS)

# tests/test_*.c are cmocka programs; tests/tool_*.c are helpers the Python tests run.
$(BUILD)/tests/test_%: tests/test_%.c $(LINK_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LINK_LIBS) -lcmocka

$(BUILD)/tests/tool_%: tests/tool_%.c $(LINK_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(LINK_LIBS)

# An LD_PRELOAD library (not instrumented, whatever the build) that makes chosen files' writes
# and syncs fail with EIO on demand: tests/test_daemon_ioerr.py.
$(BUILD)/tests/libnx_fault_ioerr.so: tests/fault_ioerr.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

$(BUILD)/bench/%: bench/%.c $(LINK_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LINK_LIBS)

# --- setup ---------------------------------------------------------------------------------
# clang and its compiler-rt (libFuzzer; only recommended by clang, so named) build the fuzz
# targets that `make test` runs briefly (make fuzz-smoke). json-schema-test-suite: the official
# JSON Schema test suite that tests/test_json_schema_suite.py holds the schema compiler to.
DEBS := build-essential pkg-config libjansson-dev libxxhash-dev libcmocka-dev \
	libzmq3-dev libczmq-dev libmsgpack-dev libsqlite3-dev libyaml-dev libpcre2-dev \
	libutf8proc-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev liburing-dev python3 \
	python3-numpy python3-zmq python3-msgpack python3-pytest python3-jsonschema python3-yaml \
	python3-prometheus-client \
	clang libclang-rt-14-dev json-schema-test-suite

deps:
	@missing=$$(for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	  done); \
	if [ -z "$$missing" ]; then echo "deps: all $(words $(DEBS)) packages present"; exit 0; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "deps: installing" $$missing; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing

# llama.cpp, the independent reference and speed baseline for our GGUF and quantized weights
# (tests/tools/llama_ref.mjs, bench/llama_bench.mjs): its prebuilt CPU binaries as shipped in
# node-llama-cpp (pinned) and @node-llama-cpp/linux-x64, installed into $(LLAMA_REF_DIR)
# (ignored). The other platforms' packages are optional dependencies of node-llama-cpp and are
# left out (--omit=optional; linux-x64 is named explicitly, ~85 MB instead of ~750 MB), and
# NODE_LLAMA_CPP_SKIP_DOWNLOAD keeps its postinstall from building or downloading llama.cpp.
# tests/tools/npm_tool.sh installs it (a temporary folder moved into place, then a stamp:
# re-running does nothing); without node >= 20 and npm, or off linux-x64, it says why in one
# line and exits 0, so callers can skip what needs it.
LLAMA_REF_DIR ?= .tools/llama-ref
NODE_LLAMA_CPP_VERSION := 3.22.1
LLAMA_REF_STAMP := $(LLAMA_REF_DIR)/.installed-$(NODE_LLAMA_CPP_VERSION)
.PHONY: llama-ref
llama-ref:
	@NODE_LLAMA_CPP_SKIP_DOWNLOAD=true NEED_LINUX_X64=1 tests/tools/npm_tool.sh llama-ref \
	  $(LLAMA_REF_DIR) $(LLAMA_REF_STAMP) \
	  "node-llama-cpp@$(NODE_LLAMA_CPP_VERSION) @node-llama-cpp/linux-x64@$(NODE_LLAMA_CPP_VERSION)" \
	  node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node --omit=optional

# The official OpenAI client for node (pinned), the real client tests/test_http.py drives
# nexusd's HTTP front with (tests/tools/openai_client.mjs), installed into $(OPENAI_DIR)
# (ignored) the way llama-ref is (tests/tools/npm_tool.sh); without node >= 20 and npm the
# tests that need it skip.
OPENAI_DIR ?= .tools/openai
OPENAI_NPM_VERSION := 4.95.0
OPENAI_STAMP := $(OPENAI_DIR)/.installed-$(OPENAI_NPM_VERSION)
.PHONY: openai-client
openai-client:
	@tests/tools/npm_tool.sh openai-client $(OPENAI_DIR) $(OPENAI_STAMP) \
	  openai@$(OPENAI_NPM_VERSION) node_modules/openai/package.json

# ajv and ajv-formats (pinned), the second independent validator of constrained generations
# (tests/tools/ajv_validate.mjs, beside python3-jsonschema in tests/test_grammar_generate.py),
# installed into $(AJV_DIR) the way openai-client is; without node >= 20 and npm it says why
# in one line and exits 0, and the tests then say ajv is skipped.
AJV_DIR ?= .tools/ajv
AJV_NPM_VERSION := 8.17.1
AJV_FORMATS_NPM_VERSION := 3.0.1
AJV_STAMP := $(AJV_DIR)/.installed-$(AJV_NPM_VERSION)-$(AJV_FORMATS_NPM_VERSION)
.PHONY: ajv
ajv:
	@tests/tools/npm_tool.sh ajv $(AJV_DIR) $(AJV_STAMP) \
	  "ajv@$(AJV_NPM_VERSION) ajv-formats@$(AJV_FORMATS_NPM_VERSION)" \
	  "node_modules/ajv/package.json node_modules/ajv-formats/package.json"

# --- tests ---------------------------------------------------------------------------------
# `make test` builds four trees (build, build-emu, build-asan, build-tsan): each build step
# uses every core unless make was given -j itself (CI runs a plain `make test` on 2 cores),
# while the tests themselves run one program at a time.
BUILD_JOBS = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc))
# The checking trees (ASan, TSan, emulation) leave out gcc's variable-location tracking: on the
# big intrinsics files it passes its size limit and compiles them a second time without
# (agents/cpu_quant.c under ASan: 67 s, 41 s without it; the whole ASan tree 145 s -> 60 s on
# two cores). Their reports name file and line as before (the line tables stay); only a
# debugger's view of locals at -O1 gets coarser.
CHECK_BUILD_CFLAGS := -fno-var-tracking-assignments

test: deps
	@$(MAKE) --no-print-directory $(BUILD_JOBS) all
	@$(MAKE) --no-print-directory llama-ref || \
	  echo "llama-ref: the install failed; tests/test_llamacpp.py will say it is skipped"
	@$(MAKE) --no-print-directory openai-client || \
	  echo "openai-client: the install failed; tests/test_http.py's client tests will say they are skipped"
	@$(MAKE) --no-print-directory ajv || \
	  echo "ajv: the install failed; tests/test_grammar_generate.py will say ajv is skipped"
	@$(MAKE) --no-print-directory $(BUILD_JOBS) --output-sync=target test-lanes

# The tests never read this machine's loader calibration (`nexusctl loader calibrate` stores it
# per file system): a stored shape, or cold=buffered, would change what their loads report.
test test-lanes unit pytest emu-test emu-run asan asan-run tsan tsan-run: export NEXUS_LOADER_CACHE := $(abspath $(BUILD))/tests-read-no-loader-calibration

# `make test` after the first tree is built: two lanes on make's job slots. The test programs
# run one at a time and mostly wait (on sockets, daemons, child processes), so a lane takes
# about a core. Lane one: the first tree's tests, the ASan pass, then the fuzz targets built
# and smoked (at nice 10: each target runs its 12 s whatever its share of the CPU, so it yields
# to the other lane's tests). Lane two: the ASan tree built (first, beside the first tree's
# tests, so lane one never waits for it), then the emulation tree built and run, then the TSan
# tree built and run. On two cores this takes about 60% of the time of one pass after
# another. Output comes a step at a time, each when it ends; a failing step stops what has
# not started.
.PHONY: test-lanes test-first-tree lane-asan lane-fuzz lane-two emu-build asan-build \
	tsan-build fuzz-build-if-clang
test-lanes: test-first-tree lane-asan lane-fuzz lane-two
test-first-tree:
	@$(MAKE) --no-print-directory unit && $(MAKE) --no-print-directory pytest
lane-asan: test-first-tree asan-build
	@$(MAKE) --no-print-directory asan-run
lane-fuzz: lane-asan
	@nice -n 10 $(MAKE) --no-print-directory fuzz-build-if-clang && \
	  nice -n 10 $(MAKE) --no-print-directory fuzz-smoke-if-clang
lane-two: asan-build
	@$(MAKE) --no-print-directory emu-build && $(MAKE) --no-print-directory emu-run && \
	  $(MAKE) --no-print-directory tsan-build && $(MAKE) --no-print-directory tsan-run

unit: $(TEST_BIN)
	@BUILD=$(BUILD) tests/run_unit.sh $(TEST_BIN)

PYTEST_ARGS ?=
pytest: $(NEXUSCTL) $(NEXUSD) $(TOOL_BIN)
	NEXUS_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

# The suite again, built with AddressSanitizer and UBSan, leak checks included (CPU build,
# -O1; part of `make test`: about 4 min on two cores, 2 of them tests): every cmocka
# program and every Python test but tests/test_llamacpp.py, whose 100 s are spent in llama.cpp
# (node, not instrumented); our side of it, tool_logits on GGUF files of every mix, runs here
# in tests/test_quantize.py and tests/test_forward.py. Any report fails the run.
ASAN_BUILD ?= build-asan
ASAN_MAKE := $(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) CUDA=0 OPT=-O1 \
	EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -Wno-format-truncation \
	$(CHECK_BUILD_CFLAGS)"
# bench/decode too: tests/test_bench_pair.py drives its --serve mode
asan-build:
	@$(ASAN_MAKE) $(BUILD_JOBS) $(ASAN_BUILD)/nexusctl $(ASAN_BUILD)/nexusd \
	  $(patsubst $(BUILD)/%,$(ASAN_BUILD)/%,$(TEST_BIN) $(TOOL_BIN)) $(ASAN_BUILD)/bench/decode
# Two tests of tool calls are a matrix of grammar modes (every tool_choice x
# parallel_tool_calls, many seeds, on the real 151k-token Qwen3 vocabulary): 12 s in the first
# tree, about 180 s under TSan and 40 s under ASan, while the code they reach is the same as the
# other tool tests' (agents as tools, streamed events, tool-result turns, refusals), which the
# sanitizers still run, and test_tools/fuzz_tools cover the modes' C under ASan. So the
# sanitizer passes leave these two out.
SAN_PYTEST_SKIP := --deselect tests/test_daemon_tools.py::test_each_tool_choice \
	--deselect tests/test_http.py::test_openai_client_tools
# And two of the slowest under ASan whose C the pass reaches elsewhere: the paired bench
# (12 s; its C side, bench/decode --serve and its bad commands, is test_decode_serve) and the
# 0.6B synth (8 s: 1.2 GB written by the code the other synth tests run on small shapes).
ASAN_PYTEST_SKIP := --deselect tests/test_bench_pair.py::test_quant_pair_runs_both \
	--deselect tests/test_synth.py::test_qwen3_0_6b
asan: asan-build
	@$(MAKE) --no-print-directory asan-run
asan-run:
	@rm -rf $(ASAN_BUILD)/reports && mkdir -p $(ASAN_BUILD)/reports
	@ASAN_OPTIONS=detect_leaks=1:log_path=$(abspath $(ASAN_BUILD))/reports/asan \
	 UBSAN_OPTIONS=print_stacktrace=1:log_path=$(abspath $(ASAN_BUILD))/reports/ubsan \
	 $(ASAN_MAKE) unit pytest PYTEST_ARGS="--ignore=tests/test_llamacpp.py $(SAN_PYTEST_SKIP) \
	   $(ASAN_PYTEST_SKIP)"
	@if ls $(ASAN_BUILD)/reports/* >/dev/null 2>&1; then \
	  echo "sanitizer reports:"; cat $(ASAN_BUILD)/reports/*; exit 1; \
	else echo "asan: no sanitizer reports"; fi

# The threaded code again, built with ThreadSanitizer (CPU build, -O1; part of `make test`,
# about 1.5 min on two cores): the cmocka programs whose code runs threads (the executor, the
# pool, the loader's reader threads, the engine's thread pool), every tests/test_daemon_*.py
# (router, store thread, executor and loader threads together), tests/test_http.py (the HTTP
# front's connection threads) and tests/test_pull.py (nexusctl pull's hashing thread beside
# its transfer loop). Any report fails
# the run (TSan also makes the program exit 66); tests/tsan.supp lists the false positives
# (libzmq's lock-free pipes, invisible to TSan) and why.
TSAN_BUILD ?= build-tsan
TSAN_MAKE := $(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) CUDA=0 OPT=-O1 \
	EXTRA_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer -Wno-format-truncation \
	$(CHECK_BUILD_CFLAGS)"
TSAN_UNIT := $(addprefix $(TSAN_BUILD)/tests/,test_exec test_pool test_loader test_gguf test_grammar \
	test_engine test_cpu_quant_forward)
TSAN_PYTEST := $(wildcard tests/test_daemon_*.py) tests/test_pull.py tests/test_http.py
tsan-build:
	@$(TSAN_MAKE) $(BUILD_JOBS) $(TSAN_BUILD)/nexusd $(TSAN_BUILD)/nexusctl $(TSAN_UNIT) \
	  $(TSAN_BUILD)/tests/libnx_fault_ioerr.so
tsan: tsan-build
	@$(MAKE) --no-print-directory tsan-run
tsan-run:
	@rm -rf $(TSAN_BUILD)/reports && mkdir -p $(TSAN_BUILD)/reports
	@export TSAN_OPTIONS="log_path=$(abspath $(TSAN_BUILD))/reports/tsan \
	  suppressions=$(abspath tests/tsan.supp)"; \
	BUILD=$(TSAN_BUILD) tests/run_unit.sh $(TSAN_UNIT) && \
	  NEXUS_BUILD=$(abspath $(TSAN_BUILD)) $(PYTHON) -m pytest -q $(TSAN_PYTEST) \
	    $(SAN_PYTEST_SKIP); rc=$$?; \
	if ls $(TSAN_BUILD)/reports/* >/dev/null 2>&1; then \
	  echo "tsan reports:"; cat $(TSAN_BUILD)/reports/*; exit 1; fi; \
	if [ $$rc != 0 ]; then exit $$rc; fi; echo "tsan: no reports"

# The CUDA backend, its kernels and the CUDA device loader run under tests/cuemu, a CPU
# emulation of CUDA (built into $(EMU_BUILD); needs CUDA's headers, not a GPU or its driver):
# test_cuemu (the emulator's own detectors), test_cuda_engine (the CUDA backend against the
# CPU backend), test_pick (the GPU's token picks against the CPU sampler), test_pool (which
# then sees a CUDA device) and test_daemon_swap.py (nexusd swapping models on the CUDA pool).
# CPU emulation: it checks index arithmetic, barriers and host orchestration; not the
# hardware, not speed.
EMU_BUILD ?= build-emu
EMU_TESTS := $(EMU_BUILD)/tests/test_cuemu $(EMU_BUILD)/tests/test_cuda_engine \
	$(EMU_BUILD)/tests/test_pick $(EMU_BUILD)/tests/test_pool
emu-build:
	@if [ -f $(CUDA_HOME)/include/cuda_runtime_api.h ]; then \
	  $(MAKE) --no-print-directory $(BUILD_JOBS) BUILD=$(EMU_BUILD) CUEMU=1 \
	    EXTRA_CFLAGS=$(CHECK_BUILD_CFLAGS) $(EMU_TESTS) $(EMU_BUILD)/nexusd $(EMU_BUILD)/nexusctl; fi
emu-test: emu-build
	@$(MAKE) --no-print-directory emu-run
emu-run:
	@if [ ! -f $(CUDA_HOME)/include/cuda_runtime_api.h ]; then \
	  echo "emu-test: skipped: CUDA's headers are not in $(CUDA_HOME)/include"; exit 0; fi; \
	echo "emu-test: CPU emulation of CUDA: checks index arithmetic, barriers and host" \
	  "orchestration; not the hardware, not speed" && \
	BUILD=$(EMU_BUILD) tests/run_unit.sh $(EMU_TESTS) && \
	NEXUS_TEST_DEVICE=cuda NEXUS_BUILD=$(abspath $(EMU_BUILD)) \
	  $(PYTHON) -m pytest -q tests/test_daemon_swap.py

# A dry run of bench/gpu_suite.sh on the CPU emulation (bench/gpu_suite_emu.sh: the emu build
# bundled into $(EMU_BUILD)/bundle, every section on the tiny preset): it checks the suite's
# glue before a GPU session and is never a source of figures. Not part of `make test` (~2 min).
gpu-suite-emu:
	@if [ ! -f $(CUDA_HOME)/include/cuda_runtime_api.h ]; then \
	  echo "gpu-suite-emu: skipped: CUDA's headers are not in $(CUDA_HOME)/include"; exit 0; fi; \
	EMU_BUILD=$(EMU_BUILD) PYTHON=$(PYTHON) bench/gpu_suite_emu.sh

$(BUILD)/tests/test_cuemu: tests/cuemu/test_cuemu.c $(BUILD)/obj/tests/cuemu/selftest_kernels.cu.o \
	$(LINK_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -Itests/cuemu -o $@ $< $(BUILD)/obj/tests/cuemu/selftest_kernels.cu.o \
	  $(LINK_LIBS) -lcmocka

# --- benchmarks and the demo ---------------------------------------------------------------
BENCH_DIR ?= var/bench
bench: all
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/run.sh
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/run_decode.sh
	BUILD=$(BUILD) bench/run_daemon.sh
	@$(MAKE) --no-print-directory bench-quant

# Ours beside llama.cpp on the same GGUF files (qwen3 0.6b and 4b shapes; F16, BF16, Q8_0,
# Q4_0, Q4_K_M; ~35 GB of files in $(BENCH_DIR)/gguf, made once): bench/run_quant.sh's table.
bench-quant: all llama-ref
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/prepare_quant.sh
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/run_quant.sh

# Batch-1 decode of the same files, both engines loaded side by side and taking turns burst by
# burst, so they meet the same seconds of this VM's memory bandwidth: bench/quant_pair.py.
bench-quant-pair: all llama-ref
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/prepare_quant.sh
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/quant_pair.py

# Grammar-constrained decode against unconstrained (bench/grammar_decode.c): qwen3 0.6b (bf16)
# synthesized with the real Qwen3 tokenizer (its 151k-token vocabulary is what masks cost),
# batch 1 and 8; bench/RESULTS.md records a run.
.PHONY: bench-grammar-decode
bench-grammar-decode: all
	@dir=$(BENCH_DIR)/qwen3-0.6b-bf16-qwentok; tok=$(BUILD)/bench/tok/qwen3; \
	  mkdir -p $$tok && gzip -dc tests/fixtures/tokenizer/qwen3/tokenizer.json.gz > $$tok/tokenizer.json && \
	  cp tests/fixtures/tokenizer/qwen3/tokenizer_config.json $$tok/ && \
	  { [ -f $$dir/config.json ] || $(BUILD)/nexusctl model synth --arch qwen3 --preset 0.6b \
	      --dtype bf16 --tokenizer $$tok --out $$dir >/dev/null; } && \
	  $(BUILD)/bench/grammar_decode $$dir $(GRAMMAR_DECODE_ARGS)
GRAMMAR_DECODE_ARGS ?= --tokens 16 --rounds 5 --batches 1,8

# The same beside llama.cpp's own constrained slowdown on the same GGUF files
# (bench/run_grammar_llama.sh: node-llama-cpp's JSON-schema grammar, bench/llama_grammar.mjs);
# qwen3-0.6b bf16 and q4_k_m from bench/prepare_quant.sh, or GRAMMAR_MODELS.
.PHONY: bench-grammar-llama
bench-grammar-llama: all llama-ref
	BUILD=$(BUILD) BENCH_DIR=$(BENCH_DIR) bench/run_grammar_llama.sh $(GRAMMAR_MODELS)

# The grammar engine (bench/grammar.c): compile and mask times on the real Qwen3 and Llama 3
# vocabularies (tests/fixtures/tokenizer, unpacked into $(BUILD)/bench/tok).
.PHONY: bench-grammar
bench-grammar: $(BUILD)/bench/grammar
	@for t in qwen3 llama3; do mkdir -p $(BUILD)/bench/tok/$$t && \
	  gzip -dc tests/fixtures/tokenizer/$$t/tokenizer.json.gz > $(BUILD)/bench/tok/$$t/tokenizer.json && \
	  cp tests/fixtures/tokenizer/$$t/tokenizer_config.json $(BUILD)/bench/tok/$$t/; done
	$(BUILD)/bench/grammar $(BUILD)/bench/tok/qwen3
	$(BUILD)/bench/grammar $(BUILD)/bench/tok/llama3

# `nexusctl pull` beside curl on one ~1.2 GB model served by tests/hub_server.py on loopback
# (bench/pull.py: the model is made once in $(BENCH_DIR)/pull; cold target, hot source).
.PHONY: bench-pull
bench-pull: $(NEXUSCTL)
	$(PYTHON) bench/pull.py --build $(BUILD) --dir $(BENCH_DIR)/pull

# `make bench-loader-user`: the loader as a user times it (bench/load_user.py): the whole
# `nexusctl model load` process beside 16 O_DIRECT dd readers and cat, cold and warm; nexusd's
# start-up with a 16 GiB pool; a task's first token with its model on disk, host tier, resident.
bench-loader-user: $(NEXUSCTL) $(NEXUSD)
	NEXUS_BUILD=$(BUILD) $(PYTHON) bench/load_user.py --bench-dir $(BENCH_DIR) --foreign \
	  --json $(BENCH_DIR)/load_user.json

# `make run`: the daemon with the embedded default configuration (configs/nexus.yaml) on two
# tiny demo models, synthesized once into var/models, in the foreground (Ctrl-C stops it).
run: deps
	@$(MAKE) --no-print-directory all
	@test -f var/models/demo-qwen3/config.json || \
	  $(NEXUSCTL) model synth --arch qwen3 --preset tiny --out var/models/demo-qwen3
	@test -f var/models/demo-llama/config.json || \
	  $(NEXUSCTL) model synth --arch llama --preset tiny --out var/models/demo-llama
	@$(NEXUSD) --config configs/nexus.yaml --check
	@echo "nexusd: tasks on tcp://127.0.0.1:5555, events on tcp://127.0.0.1:5556"
	@echo "send a first task from another terminal:  $(NEXUSCTL) send assistant \"Hello\""
	$(NEXUSD) --config configs/nexus.yaml

# A folder that runs on a GPU machine without our Debian packages: build/ plus the shared
# libraries it needs from outside glibc (see bench/gpu_suite.sh).
gpu-bundle: all
	bench/gpu_bundle.sh $(BUILD)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- fuzzing (clang + libFuzzer) ----------------------------------------------------------
# Every parser of outside input has a libFuzzer target (tests/fuzz_*.c, each says how to run
# it) and a small committed seed corpus (tests/fuzz/corpus/<target>/); tests/fuzz/README.md
# records the long runs. `make fuzz` builds them into $(BUILD)/fuzz; `make fuzz-smoke` runs
# each for FUZZ_SMOKE_S seconds on a copy of its seeds, four at a time (part of `make test`
# where clang has libFuzzer, so the harnesses never rot). The parser's own sources are compiled
# instrumented; what they call elsewhere comes from the ordinary libraries. Undefined behaviour
# stops a run.
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -Iloader -Iagents -Inexus -Inexus/hub
FUZZ_TARGETS := fuzz_st_header fuzz_gguf_header fuzz_proto fuzz_openai fuzz_conf fuzz_nexus_conf \
	fuzz_tokenizer fuzz_chat_template fuzz_model_config fuzz_pull_listing fuzz_json_schema fuzz_gbnf \
	fuzz_gram_compat fuzz_tools fuzz_loader_cache
FUZZ_BIN := $(addprefix $(BUILD)/fuzz/,$(FUZZ_TARGETS))
FUZZ_SMOKE_S ?= 12
.PHONY: fuzz fuzz-smoke fuzz-smoke-if-clang
fuzz: $(FUZZ_BIN)

# The checkpoint readers: nx_st_open takes both formats, so both targets link both.
FUZZ_SRC := loader/st_read.c loader/st_common.c loader/gguf_read.c loader/dtype.c loader/err.c
$(BUILD)/fuzz/fuzz_st_header $(BUILD)/fuzz/fuzz_gguf_header: $(BUILD)/fuzz/%: tests/%.c $(FUZZ_SRC) \
	loader/st_internal.h loader/nx_loader.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC) -ljansson -lxxhash -lpthread

FUZZ_PROTO_SRC := nexus/proto.c nexus/proto_frame.c nexus/proto_write.c nexus/proto_schema.c \
	agents/sampler.c loader/err.c
$(BUILD)/fuzz/fuzz_proto: tests/fuzz_proto.c $(FUZZ_PROTO_SRC) nexus/proto.h nexus/proto_int.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_PROTO_SRC) -ljansson -lmsgpackc -lm -lpthread

# The HTTP front's OpenAI request translation, checked against the protocol's parser.
FUZZ_OPENAI_SRC := nexus/http/http_translate.c $(FUZZ_PROTO_SRC)
$(BUILD)/fuzz/fuzz_openai: tests/fuzz_openai.c $(FUZZ_OPENAI_SRC) nexus/http/http_translate.h \
	nexus/proto.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Inexus/http -o $@ $< $(FUZZ_OPENAI_SRC) -ljansson -lmsgpackc -lm \
	  -lpthread

# Agent files (fuzz_conf) and nexus.yaml with its agents folder (fuzz_nexus_conf).
FUZZ_CONF_SRC := nexus/conf.c nexus/conf_agent.c nexus/conf_yaml.c nexus/hub/modelstore.c agents/sampler.c loader/err.c
$(BUILD)/fuzz/fuzz_conf $(BUILD)/fuzz/fuzz_nexus_conf: $(BUILD)/fuzz/%: tests/%.c $(FUZZ_CONF_SRC) \
	nexus/conf.h nexus/conf_yaml.h nexus/hub/modelstore.h $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_CONF_SRC) $(LINK_LIBS)

# The tokenizer (encode and decode) and chat rendering.
FUZZ_TOK_SRC := agents/tokenizer.c agents/tok_bpe.c agents/tok_config.c agents/tok_encode.c \
	agents/detok.c agents/chat.c
$(BUILD)/fuzz/fuzz_tokenizer $(BUILD)/fuzz/fuzz_chat_template: $(BUILD)/fuzz/%: tests/%.c \
	$(FUZZ_TOK_SRC) agents/tok_internal.h agents/nx_engine.h $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_TOK_SRC) $(LINK_LIBS) -lz

# Tool calls: the streaming parser (every split the same) and the tools grammar.
FUZZ_TOOLS_SRC := agents/tools_parse.c agents/tools_grammar.c agents/tools_family.c
$(BUILD)/fuzz/fuzz_tools: tests/fuzz_tools.c $(FUZZ_TOOLS_SRC) agents/tools.h $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_TOOLS_SRC) $(LINK_LIBS)

# A model's config.json, or a GGUF file's metadata.
FUZZ_CONFIG_SRC := agents/config.c agents/config_gguf.c
$(BUILD)/fuzz/fuzz_model_config: tests/fuzz_model_config.c $(FUZZ_CONFIG_SRC) agents/nx_engine.h \
	$(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_CONFIG_SRC) $(LINK_LIBS)

# The loader's calibration cache file (nexusctl loader calibrate writes it, every load reads it).
FUZZ_LC_SRC := loader/ioshape.c loader/err.c
$(BUILD)/fuzz/fuzz_loader_cache: tests/fuzz_loader_cache.c $(FUZZ_LC_SRC) loader/nx_loader.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LC_SRC) -lpthread

fuzz-smoke: $(FUZZ_BIN)
	@BUILD=$(BUILD) FUZZ_SMOKE_S=$(FUZZ_SMOKE_S) tests/fuzz/smoke.sh $(FUZZ_TARGETS)

# True where $(FUZZ_CC) can link a libFuzzer program. For `make test`: the targets are built
# (beside the first tree's tests) and smoked where it can, else one line says why not.
LIBFUZZER_PROBE = echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' | \
	$(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1
fuzz-build-if-clang:
	@if $(LIBFUZZER_PROBE); then \
	  $(MAKE) --no-print-directory fuzz; fi

fuzz-smoke-if-clang:
	@if $(LIBFUZZER_PROBE); then \
	  $(MAKE) --no-print-directory fuzz-smoke; \
	else echo "fuzz-smoke: skipped: $(FUZZ_CC) cannot link libFuzzer (-fsanitize=fuzzer; make deps installs clang and libclang-rt-14-dev)"; fi

# What `nexusctl pull` reads from a hub's API: the revision record and the selection made from it.
FUZZ_PULL_SRC := nexus/hub/pull_hub.c loader/err.c
$(BUILD)/fuzz/fuzz_pull_listing: tests/fuzz_pull_listing.c $(FUZZ_PULL_SRC) nexus/hub/pull_int.h \
	nexus/hub/pull.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_PULL_SRC) -ljansson -lcurl -lpthread

# The grammar engine: JSON Schemas (fuzz_json_schema) and GBNF grammars (fuzz_gbnf), each
# compiled and its masks checked against its matcher (tests/fuzz_gram_common.h); schema
# compatibility (fuzz_gram_compat), its NX_OK checked on an instance of the output. Every gram_*
# source but the tokenizer adapter.
FUZZ_GRAM_SRC := $(filter-out agents/gram_vocab_tok.c,$(wildcard agents/gram_*.c)) loader/err.c
$(BUILD)/fuzz/fuzz_json_schema $(BUILD)/fuzz/fuzz_gbnf $(BUILD)/fuzz/fuzz_gram_compat: \
  $(BUILD)/fuzz/%: tests/%.c $(FUZZ_GRAM_SRC) \
	tests/fuzz_gram_common.h agents/grammar.h agents/gram_internal.h agents/gram_schema.h \
	agents/gram_vocab.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Itests -o $@ $< $(FUZZ_GRAM_SRC) -ljansson -lm -lpthread
