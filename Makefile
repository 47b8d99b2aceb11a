# The two commands of the README: `make up` and `make test`. Both build the environment first
# from nothing but Python 3.11+, Node.js (npm) and Java 17+.
VENV ?= .venv
PY := $(VENV)/bin/python
export MODELPORT_TOOLS_DIR ?= $(CURDIR)/.tools

.PHONY: env tools browser engine engine-stop image sam-local test test-unit lint up clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	touch $@

tools: env
	$(VENV)/bin/modelport tools

# Debian's chromium for the dashboard's browser tests (apt-get as root where missing).
browser:
	infra/browser.sh

# Everything the tests need: the venv, DynamoDB Local, helm and kubectl, Debian's chromium, the
# Docker Engine and the model-server image (the container tests run model servers as real containers).
test: env tools browser image
	$(PY) -m pytest -n 2 --dist loadfile

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

# Every function in a Lambda container: the Lambda-compatible python3.11 image on the shared
# debootstrap base (infra/image/build.sh lambda), `sam build`, local stand-ins, every sample in
# events/ through `sam local invoke`, then the seed's API calls through `sam local start-api`
# (tests/support/sam_local.py; --mode=start-lambda keeps containers warm and is much faster).
sam-local: env tools engine
	$(PY) -m tests.support.sam_local $(SAM_LOCAL_ARGS)

clean:
	rm -rf $(VENV) .tools .modelport
