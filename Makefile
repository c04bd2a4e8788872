# The two commands of the README: `make run` and `make test`. Both install what is missing first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build build-asan run stop status test test-build test-asan check bench bench-audit bench-identity bench-vault bench-guideline clean help

all: build

help:
	@echo "make run     install what is missing, build, start Postgres, Redis and every service (Ctrl-C stops)"
	@echo "make stop    stop a stack started by 'make run' from another shell"
	@echo "make status  show what the local stack runs"
	@echo "make test    install, run the style checks, build and test normally and under ASan+UBSan"
	@echo "make bench   echo baseline against the C++ async greeter (bench/run.sh; about 3 minutes)"
	@echo "make bench-audit     audit appends against echo and a plain INSERT (bench/audit.sh; about 3 minutes)"
	@echo "make bench-identity  identity Check/Login against echo, and authorize() in-process (bench/identity.sh)"
	@echo "make bench-vault     vault Put/Get against echo and a plain INSERT, AES-GCM share (bench/vault.sh)"
	@echo "make bench-guideline guideline ReviewReferral against echo, rule evaluation in-process (bench/guideline.sh)"
	@echo "make check   banned-function and clang-format checks only"
	@echo "make clean   remove build trees and the local stack's state"

deps:
	bash deploy/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DALMA_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	bash deploy/stack.sh start $(BUILD) --foreground

stop:
	bash deploy/stack.sh stop $(BUILD)

status:
	bash deploy/stack.sh status $(BUILD)

check:
	bash deploy/check-banned.sh
	bash deploy/check-format.sh

test-build: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# Valgrind runs only in the plain build (it cannot run under ASan).
test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE valgrind $(CTEST_ARGS)

test: deps check
	$(MAKE) test-build
	$(MAKE) test-asan

bench:
	bash deploy/deps.sh --bench
	bash bench/run.sh

bench-audit:
	bash deploy/deps.sh --bench
	bash bench/audit.sh

bench-identity:
	bash deploy/deps.sh --bench
	bash bench/identity.sh

bench-vault:
	bash deploy/deps.sh --bench
	bash bench/vault.sh

bench-guideline:
	bash deploy/deps.sh --bench
	bash bench/guideline.sh

clean:
	-bash deploy/stack.sh stop $(BUILD)
	rm -rf $(BUILD) $(ASAN_BUILD) build-bench .stack
