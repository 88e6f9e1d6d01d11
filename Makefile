# Two commands a newcomer needs: `make demo` and `make test`.
# Everything else here is what they stand on.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := requirements.lock

.PHONY: setup demo test test-fast lint bench upgrade clean

setup: $(VENV)/.installed

# Installs come from the committed lock, so a fresh machine gets exactly what CI
# tested. torch==2.13.0 first: on a machine without a GPU it installs the CPU
# build from local disk in seconds, where a bare `torch` would pull CUDA wheels.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) torch==2.13.0
	$(PIP) install -q -c $(LOCK) -e '.[dev]'
	$(PIP) check
	$(PY) .ci/lock.py check $(LOCK)
	touch $@

demo: setup
	$(VENV)/bin/evoinstruct demo --dir demo-project --force

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto

# For developers between commits: everything but the tests marked slow, with the
# slowest fifteen named so a test that grew slow is seen (under 3 minutes on 2 cores).
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto -m "not slow" --durations=15

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# A deliberate upgrade: resolve the newest versions pyproject.toml allows in a
# scratch environment, run the whole suite on them, and only then rewrite the lock.
UPGRADE_VENV := .venv-upgrade
upgrade:
	rm -rf $(UPGRADE_VENV)
	python3 -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(UPGRADE_VENV)/bin/python -m pip install -q -e '.[dev]'
	$(UPGRADE_VENV)/bin/python -m pip check
	$(UPGRADE_VENV)/bin/python -m ruff check .
	$(UPGRADE_VENV)/bin/python -m pytest -q
	$(UPGRADE_VENV)/bin/python .ci/lock.py write $(LOCK)
	rm -rf $(UPGRADE_VENV)
	@echo "$(LOCK) rewritten; review 'git diff $(LOCK)', then run 'make setup test' and commit it."

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) demo-project
