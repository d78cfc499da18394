# One-command entry points. `make demo` runs the whole pipeline; `make test` runs every test.
# Both install what they need (a virtualenv from requirements-dev.txt, Kafka and MariaDB via
# stack/) on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# .env is not included here: make would cut a value at `#` and expand `$`. The programs
# (config/) and the stack (stack/lib.sh) each read it with python-dotenv instead.

.PHONY: help install up down status train demo test test-unit lint benchmark chaos clean

help:
	@echo "make demo       install, start Kafka + MariaDB, train, run producer -> service -> consumer"
	@echo "make test       install, start the stack, run every test"
	@echo "make test-unit  the tests that need neither Kafka nor MySQL"
	@echo "make lint       ruff and mypy over the whole tree (settings in pyproject.toml)"
	@echo "make benchmark  the service against the seed design and a pass-through ceiling: throughput, latency, memory (~10 min)"
	@echo "make chaos      the service under kill -9, zombies, scaling, broker and MySQL outages: lost, duplicated or wrong predictions (~10 min)"
	@echo "make up / down  start / stop the local Kafka and MariaDB (state in .stack/)"
	@echo "make train      load the offline store and train the model"
	@echo "make clean      stop the stack and delete its data, the virtualenv and model artifacts"

install: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed (found: $$($(PYTHON) --version))"; exit 1; }
	@# A failed `venv` can leave a python without pip behind; start over rather than trust it.
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); } \
		|| { rm -rf $(VENV); echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	@# Not --quiet: a first install downloads for minutes, and silence looks like a hang.
	@echo "== installing the pinned Python packages into $(VENV)/ (the first time takes a few minutes)"
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements-dev.txt
	@touch $@
	@echo "== $(VENV)/ is ready"

# install first: stack/lib.sh reads .env with the virtualenv's python-dotenv.
up: install
	@bash stack/up.sh

down:
	@bash stack/down.sh

status:
	@bash stack/status.sh

train: install up
	$(PY) -m offline_store.loader
	$(PY) -m model.train --promote

demo: train
	@bash tools/demo.sh

test: install up
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not integration"

# Settings in pyproject.toml; mypy checks the files it lists there (the whole tree).
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# Not `train`: the benchmark loads its own store and trains its own model, leaving the ones a
# running service may use alone.
benchmark: install up
	$(PY) -m tools.bench

# `up` for the Kafka jars it resolves and caches (.stack/kafka/classpath-*.txt): the harness runs
# its own broker and MariaDB from them, and leaves the local stack's data alone.
chaos: install up
	$(PY) -m tools.chaos

clean:
	@bash stack/down.sh --purge
	rm -rf $(VENV) model/artifacts model/registry .pytest_cache .mypy_cache .ruff_cache
