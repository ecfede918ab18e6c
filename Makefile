# Canary Analyzer: `make demo` runs a local rollout end to end, `make test` the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv sysdeps test lint demo bench soak notebooks clean

all: test

# The first run creates the venv and installs over a hundred packages: several minutes (7 on 2
# shared cores). pip's own output (each package, download progress) shows it is moving.
$(STAMP): pyproject.toml
	@echo "make: installing the package and its dependencies into $(VENV) (once, several minutes; progress below)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[test]'
	touch $(STAMP)
	@echo "make: $(VENV) is ready"

venv: $(STAMP)

# prometheus and nginx from Debian's packages when missing (needs root; says so otherwise)
sysdeps:
	@bash scripts/sysdeps.sh

test: venv sysdeps
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

lint: venv
	$(PY) -m ruff check analyzer tests benchmarks
	$(VENV)/bin/lint-imports

demo: venv
	@bash scripts/sysdeps.sh --demo
	$(VENV)/bin/canary demo

# Jupyter into the venv, then both notebooks executed with their defaults (the postmortem opens
# the example rollouts in notebooks/data/example.db); executed copies land in out/notebooks/.
notebooks: venv
	$(PY) -m pip install --progress-bar on -e '.[notebooks]'
	$(PY) scripts/run_notebooks.py

bench: venv sysdeps
	$(PY) benchmarks/decision_quality.py
	$(PY) benchmarks/limits.py
	$(PY) benchmarks/throughput.py

soak: venv sysdeps
	CANARY_SOAK=1 $(PY) -m pytest tests/faults -q

clean:
	rm -rf $(VENV) out .pytest_cache build *.egg-info
