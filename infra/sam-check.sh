#!/usr/bin/env bash
# Checks the SAM application offline: `sam validate`, `sam validate --lint` (cfn-lint) and
# `sam build`. The SAM CLI lives in its own venv (.tools/sam-venv): its pins conflict with the
# project's .venv. Installed once, then reused; the layer builds reuse pip's cache and the npm
# package already in .tools, so a warm run takes well under a minute.
#
#   infra/sam-check.sh            validate, lint and build
#   infra/sam-check.sh validate   validate and lint only
#   infra/sam-check.sh build      build only
#
# Nothing here talks to AWS: fake credentials and a fixed region keep `sam` from looking.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SAM_VERSION=1.170.0
SAM_VENV=${SAM_VENV:-$ROOT/.tools/sam-venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$SAM_VENV/bin/sam" ] || ! "$SAM_VENV/bin/sam" --version 2>/dev/null | grep -q "$SAM_VERSION"; then
  echo "installing aws-sam-cli==$SAM_VERSION into $SAM_VENV"
  "$PYTHON" -m venv "$SAM_VENV"
  "$SAM_VENV/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_VERSION"
fi

export PATH="$SAM_VENV/bin:$PATH"          # python3 of the layer Makefiles: the venv's 3.11 with pip
export SAM_CLI_TELEMETRY=0
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_REGION=${AWS_REGION:-$AWS_DEFAULT_REGION}
export AWS_EC2_METADATA_DISABLED=true
export MODELPORT_TOOLS_DIR=${MODELPORT_TOOLS_DIR:-$ROOT/.tools}

step() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name"
  "$@"
  echo "== $name: ok ($((SECONDS - start)) s)"
}

what=${1:-all}
if [ "$what" = all ] || [ "$what" = validate ]; then
  step "sam validate" sam validate --template-file template.yaml --region "$AWS_REGION"
  step "sam validate --lint" sam validate --lint --template-file template.yaml --region "$AWS_REGION"
fi
if [ "$what" = all ] || [ "$what" = build ]; then
  step "sam build" sam build --template-file template.yaml --build-dir .aws-sam/build
fi
