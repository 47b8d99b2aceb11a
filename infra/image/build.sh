#!/usr/bin/env bash
# `make image`: build the model-server image from nothing, with no image registry.
#
#   build.sh [server]   the base (once) and the model-server image (the default)
#   build.sh base       the base only; prints its tag (what every other image here builds FROM)
#   build.sh lambda     the base (once) and the Lambda-compatible python3.11 image that
#                       `sam local` runs functions in (infra/image/Dockerfile.lambda, `make sam-local`)
#
# 1. The base image (once; later runs reuse it): a minimal Debian bookworm made by debootstrap
#    with Debian's Python 3.11 and venv, the machine's CA bundle (pip inside the build reaches
#    PyPI through it), imported with `docker import` (DESIGN.md, row "containers").
# 2. The model-server image: the repository's Dockerfile on that base, built with the classic
#    builder (DOCKER_BUILDKIT=0: BuildKit would pull its frontend image from a registry).
#
# 3. (lambda) infra/image/Dockerfile.lambda on that base, tagged as SAM's python3.11 image.
#
# Prints the image's tag as the last line of its output. Needs a running Docker Engine and root
# (debootstrap). Environment:
#   MODELPORT_BASE_IMAGE   base tag            (default modelport/debian-python:bookworm)
#   MODELPORT_IMAGE        model-server tag    (default ghcr.io/modelport/model-server:<package version>,
#                          the image the chart and the settings name, so a cluster on this Docker
#                          Engine runs it without a pull)
#   MODELPORT_LAMBDA_IMAGE the Lambda image's tag (default public.ecr.aws/lambda/python:3.11-x86_64,
#                          the tag `sam local invoke --skip-pull-image` looks for)
#   DEBIAN_MIRROR          debootstrap mirror  (default http://deb.debian.org/debian)
set -euo pipefail
what="${1:-server}"
case "$what" in base|server|lambda) ;; *) echo "usage: build.sh [base|server|lambda]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
base="${MODELPORT_BASE_IMAGE:-modelport/debian-python:bookworm}"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
image="${MODELPORT_IMAGE:-ghcr.io/modelport/model-server:$version}"
lambda_image="${MODELPORT_LAMBDA_IMAGE:-public.ecr.aws/lambda/python:3.11-x86_64}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"

if ! docker info >/dev/null 2>&1; then
  echo "build.sh: no Docker Engine answers (start dockerd as root first; README, 'Containers')" >&2
  exit 2
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "building the base image $base with debootstrap (about a minute)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # The machine's CA bundle: where a proxy re-signs TLS, pip inside the build needs it.
  if [ -f "$ca_bundle" ]; then cp "$ca_bundle" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"; fi
  # What no image needs: apt's lists and caches, documentation, locales.
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/* \
         "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
         "$work/rootfs"/usr/share/locale/*
  tar -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$base" >/dev/null
fi

if [ "$what" = base ]; then
  echo "$base"
  exit 0
fi

if [ "$what" = lambda ]; then
  echo "building $lambda_image on $base" >&2
  log="$(mktemp)"
  if ! DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$base" -f "$root/infra/image/Dockerfile.lambda" \
      -t "$lambda_image" "$root/infra/image" >"$log" 2>&1; then
    tail -30 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "$lambda_image"
  exit 0
fi

echo "building $image on $base" >&2
log="$(mktemp)"
if ! DOCKER_BUILDKIT=0 docker build --build-arg "PYTHON_IMAGE=$base" -t "$image" "$root" >"$log" 2>&1; then
  tail -30 "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "$image"
