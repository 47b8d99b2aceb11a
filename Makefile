# The two commands of the README: `make up` and `make test`. Both build the environment first
# from nothing but Python 3.11+, Node.js (npm) and Java 17+.
VENV ?= .venv
PY := $(VENV)/bin/python
export MODELPORT_TOOLS_DIR ?= $(CURDIR)/.tools

.PHONY: env tools test test-unit lint up image clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	touch $@

tools: env
	$(VENV)/bin/modelport tools

test: env tools
	$(PY) -m pytest

test-unit: env
	$(PY) -m pytest tests/unit

lint: env
	$(VENV)/bin/ruff check src functions tests bench
	$(VENV)/bin/mypy src

up: env
	$(VENV)/bin/modelport up --demo

# The model-server image (and, once, its debootstrap base); needs a running Docker Engine and root.
image:
	infra/image/build.sh

clean:
	rm -rf $(VENV) .tools .modelport
