# flatnet: `make demo` and `make test` install what they need, then run.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: deps system-deps demo test test-unit lab-down openapi bench-sync bench-proxy bench-cni bench-log bench-replay clean

deps: system-deps $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: deps
	$(VENV)/bin/flatnet demo

test: deps
	$(VENV)/bin/python -m pytest

test-unit: deps
	$(VENV)/bin/python -m pytest -m "not root and not lab"

bench-sync: deps
	$(VENV)/bin/python bench/sync.py

bench-proxy: deps
	$(VENV)/bin/python bench/proxy.py

bench-cni: deps
	$(VENV)/bin/python bench/cni.py

bench-log: deps
	$(VENV)/bin/python bench/log.py

bench-replay: deps
	$(VENV)/bin/python bench/replay.py

openapi: deps
	$(VENV)/bin/python -m flatnet.gateway.openapi > docs/openapi.yaml

lab-down: deps
	$(VENV)/bin/flatnet lab down

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
