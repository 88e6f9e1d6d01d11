# Two commands a newcomer needs: `make demo` and `make test`.
# Everything else here is what they stand on.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# Pick the CPU torch build where there is no GPU: torch==2.13.0 installs from
# the machine's local wheel in seconds; a bare `torch` would pull CUDA wheels.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q "torch>=2.6,<2.15"; \
	else \
	  $(PIP) install -q torch==2.13.0; \
	fi
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/evoinstruct demo --dir demo-project --force

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-project
