# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it when it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-deep test-versions lint typecheck check bench docs clean browser

# The HTML report's browser test drives Debian's chromium through playwright (no browser
# download); installed here when missing. ASYNCLOCKS_NO_BROWSER=1 skips the test instead.
CHROMIUM ?= /usr/bin/chromium
# A failed install does not stop make: the browser test then fails, saying what is missing.
browser:
	@test -x $(CHROMIUM) || test "$${ASYNCLOCKS_NO_BROWSER:-}" = 1 || \
		{ echo "installing chromium (apt) for the HTML report's browser test"; \
		  apt-get install -y --no-install-recommends chromium >/dev/null || \
		  { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; } || \
		  echo "could not install chromium: the browser test will fail (ASYNCLOCKS_NO_BROWSER=1 skips it)"; }

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m asynclocks demo
	$(BIN)/python -m services.bank showdown

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests marked `depth` again, at their deep size (tests/depth.py): the fuzzing's 5,000 cases,
# 4 generated request sets per lock mode in the linearizability proofs, the soak's 20,000
# requests per mode, 20 programs per reduction property test.
# `make test` runs the same tests at the default size; CI (.ci/run) runs both.
test-deep: $(STAMP)
	ASYNCLOCKS_TEST_DEPTH=deep $(BIN)/python -m pytest -m depth $(PYTEST_ARGS)

# tests/asynclocks and the examples on Python 3.12 and 3.13 (noxfile.py); pyenv's shims find
# them through PYENV_VERSION (its shims are put on PATH in case the shell did not).
# `make test` stays the full suite on 3.11.
PYENV_VERSIONS ?= 3.11.7:3.12.1:3.13.0
PYENV_ROOT ?= $(HOME)/.pyenv
test-versions: $(STAMP)
	PATH="$(PYENV_ROOT)/shims:$$PATH" PYENV_VERSION=$${PYENV_VERSION:-$(PYENV_VERSIONS)} \
		$(BIN)/nox $(NOX_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The documentation site, into site/; --strict turns every warning (a broken link, a docstring
# mkdocstrings cannot read) into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/locks.py

clean:
	rm -rf $(VENV) .nox build dist site .pytest_cache .mypy_cache .ruff_cache
