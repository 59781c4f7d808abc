# The two commands a new user runs: `make demo` and `make test`.
# Everything they need is installed here, into .venv, from the registries.

# `make test PYTHON=python3.12 VENV=.venv-3.12` tests another interpreter in
# its own venv; `make test-all` does so for every CPython 3.11+ found.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
BENCH_DEPS := $(VENV)/.bench-deps-installed
LINT_DEPS := $(VENV)/.lint-deps-installed
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test test-all test-rust test-python build build-release bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "maturin>=1.9.3,<2" "cloudpickle>=2.1" "pytest>=8" "pytest-timeout>=2.3" "ruff>=0.6" numpy rich "tqdm>=4.27"
	touch $@

# Development build (fast to compile) of the extension, installed editable.
# Bytecode is compiled explicitly, as a wheel install does: with
# PYTHONDONTWRITEBYTECODE set, every worker would otherwise compile shoal's
# modules from source at start-up.
build: $(DEPS)
	$(BIN)/maturin develop --quiet
	$(BIN)/python -m compileall -q python/shoal

build-release: $(DEPS)
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python -m compileall -q python/shoal

demo: build
	$(BIN)/python examples/demo.py

test: test-rust test-python

test-rust:
	cargo test -p shoal-core

test-python: build
	$(BIN)/python -m pytest

# The Rust tests do not depend on Python: run once. Then the Python suite on
# each CPython of 3.11 or later that .ci/pythons finds (the default python3,
# pyenv's builds, python3.X on PATH), one per minor version: the default
# python3 in $(VENV), as `make test` runs it, every other in its own
# .venv-X.Y. The builds go one after another (they share target/ and its
# lock; each installs its own cpython-3XX extension into python/shoal). The
# suites run one after another, or with TEST_ALL_PARALLEL=1 each starts as
# soon as its build is done, beside the next build and the other suites:
# most of a suite's time is spent waiting on workers, so on 2 cores this
# takes about half the time. Every version runs even when one fails; the
# closing lines give each version's pytest summary (its whole output is in
# VENV/test-all.log). A command sh starts in the background ignores SIGINT,
# and so would every interpreter the tests start, whose Ctrl-C the crash
# tests send: each suite starts with SIGINT back at its default.
TEST_ALL_PARALLEL ?= 0

test-all: test-rust
	@pythons="$$(PYTHON=$(PYTHON) .ci/pythons)"; \
	[ -n "$$pythons" ] || { echo "test-all: no CPython 3.11 or later found"; exit 1; }; \
	default=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	default_sigint='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])'; \
	suite() { \
		VIRTUAL_ENV=$$PWD/$$2 $$2/bin/python -c "$$default_sigint" -m pytest </dev/null 2>&1; \
		echo "test-all: exit $$?"; \
	}; \
	runs=""; \
	for minor in $$(echo "$$pythons" | cut -d' ' -f1); do \
		exe=$$(echo "$$pythons" | awk -v m=$$minor '$$1 == m {print $$2}'); venv=.venv-$$minor; \
		if [ "$$minor" = "$$default" ]; then exe=$(PYTHON); venv=$(VENV); fi; \
		echo "=== CPython $$minor: $$exe in $$venv: build"; \
		$(MAKE) --no-print-directory build PYTHON="$$exe" VENV=$$venv </dev/null || { wait; exit 1; }; \
		runs="$$runs $$minor:$$venv"; \
		if [ "$(TEST_ALL_PARALLEL)" = 1 ]; then \
			echo "=== CPython $$minor: tests started, output in $$venv/test-all.log"; \
			suite $$minor $$venv > $$venv/test-all.log & \
		else \
			echo "=== CPython $$minor: tests"; \
			suite $$minor $$venv | tee $$venv/test-all.log; \
		fi; \
	done; \
	if [ "$(TEST_ALL_PARALLEL)" = 1 ]; then \
		wait; \
		for run in $$runs; do echo "=== CPython $${run%%:*}"; cat $${run#*:}/test-all.log; done; \
	fi; \
	failed=""; summary=""; \
	for run in $$runs; do \
		log=$${run#*:}/test-all.log; \
		tail -n 1 $$log | grep -q "exit 0" || failed="$$failed $${run%%:*}"; \
		summary="$$summary$$(printf '\nCPython %s: %s' $${run%%:*} "$$(grep -E '^=+ .* in [0-9.]+s' $$log | tail -n 1)")"; \
	done; \
	echo "test-all:$$summary"; \
	if [ -n "$$failed" ]; then echo "test-all: failed on CPython$$failed"; exit 1; fi

# mypy pinned: a new release can add checks, and CI should not fail on a
# change nobody made here.
$(LINT_DEPS): $(DEPS)
	$(BIN)/pip install --quiet "mypy==2.4.1"
	touch $@

$(BENCH_DEPS): $(DEPS)
	$(BIN)/pip install --quiet numpy matplotlib mpire loky tqdm pebble
	touch $@

bench: build-release $(BENCH_DEPS)
	$(BIN)/python benches/run.py

# stubtest imports the built extension, so lint builds it first. mypy reads
# its settings from pyproject.toml. The user's program is checked --strict,
# with shoal read as a user's mypy reads an installed package: its own errors
# silenced (the line before checks them).
lint: build $(LINT_DEPS)
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all --check
	$(BIN)/ruff check python tests examples benches
	$(BIN)/ruff format --check python tests examples benches
	$(BIN)/python -m mypy.stubtest shoal._shoal --allowlist python/stubtest-allowlist.txt
	$(BIN)/mypy
	$(BIN)/mypy --strict --follow-imports=silent tests/typing/user_program.py

clean:
	rm -rf $(VENV) .venv-3.* target
