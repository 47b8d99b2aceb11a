# The modelport model server image: `python -m modelport.serving`, configured by environment
# variables (see src/modelport/serving/__init__.py). Built by `make image` (infra/image/build.sh)
# with the classic builder on a base made here by debootstrap (no registry is reachable), or on
# any Debian-based Python 3.11 image: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm.
#
# Two stages: the build stage makes a virtualenv with the package and only what the model server
# imports (the `serving` extra plus the four core libraries it uses: boto3 to fetch, pydantic and
# packaging for the domain, prometheus-client for /metrics); the final stage copies that virtualenv onto a fresh base, runs as a
# non-root user and writes only under /tmp (MODEL_CACHE_DIR, HOME), so the pod can run with
# readOnlyRootFilesystem and an emptyDir on /tmp. Byte code is compiled at build time: with a
# read-only root, Python could not cache it and would compile every module on each start.
ARG PYTHON_IMAGE=modelport/debian-python:bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python3 -m venv /opt/modelport
COPY pyproject.toml ./
# The pins come from pyproject.toml, never written twice. Dependencies first, in their own layer:
# a change to the code alone reuses it.
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
core = [pin for pin in p["dependencies"] if pin.split("=")[0] in ("boto3", "pydantic", "packaging", "prometheus-client")]; \
print("\n".join(core + p["optional-dependencies"]["serving"]))' > requirements.txt \
 && /opt/modelport/bin/pip install -q -r requirements.txt
COPY README.md ./
COPY src ./src
RUN /opt/modelport/bin/pip install -q --no-deps . \
 && /opt/modelport/bin/pip uninstall -q -y pip setuptools \
 && find /opt/modelport/lib -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
 && /opt/modelport/bin/python -m compileall -q -j 0 /opt/modelport/lib \
 && /opt/modelport/bin/python -c "import modelport.serving.server, sklearn.ensemble, sklearn.linear_model, skops.io, uvloop, httptools, orjson, boto3"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MODEL_CACHE_DIR=/tmp/modelport \
    PORT=8080
RUN groupadd --system --gid 10001 modelport \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin modelport
COPY --from=build /opt/modelport /opt/modelport
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["python", "-m", "modelport.serving"]
