# syntax=docker/dockerfile:1.7
# The modelport model server image: `python -m modelport.serving`, configured by environment
# variables (see src/modelport/serving/__init__.py). Two stages: the build stage makes a virtualenv
# with `pip install .[serving]`; the final stage copies only that virtualenv onto a fresh slim
# Python, runs as a non-root user and writes only under /tmp (MODEL_CACHE_DIR, HOME), so the pod
# can run with readOnlyRootFilesystem and an emptyDir on /tmp.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/modelport
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/modelport/bin/pip install --no-cache-dir ".[serving]" \
 && /opt/modelport/bin/python -m compileall -q /opt/modelport/lib \
 && /opt/modelport/bin/python -c "import modelport.serving.server, sklearn, uvloop, httptools, orjson"

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
