# The two commands of the README: `make up` and `make test`. Both build the environment first
# from nothing but Python 3.11+, Node.js (npm) and Java 17+.
VENV ?= .venv
PY := $(VENV)/bin/python
export MODELPORT_TOOLS_DIR ?= $(CURDIR)/.tools

.PHONY: env tools engine engine-stop image test test-unit lint up clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	touch $@

tools: env
	$(VENV)/bin/modelport tools

# Everything the tests need: the venv, DynamoDB Local, helm and kubectl, the Docker Engine and the
# model-server image (the container tests run model servers as real containers).
test: env tools image
	$(PY) -m pytest

test-unit: env
	$(PY) -m pytest tests/unit

lint: env
	$(VENV)/bin/ruff check src functions tests bench
	$(VENV)/bin/mypy src

up: env
	$(VENV)/bin/modelport up --demo

# The Docker Engine (Debian's docker.io, dockerd started as root) and the model-server image (and,
# once, its debootstrap base).
engine:
	infra/image/engine.sh start

engine-stop:
	infra/image/engine.sh stop

image: engine
	infra/image/build.sh

clean:
	rm -rf $(VENV) .tools .modelport
