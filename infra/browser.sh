#!/usr/bin/env bash
# `make browser`: Debian's chromium for the dashboard's browser tests (tests/e2e/test_dashboard.py,
# driven by Playwright from PyPI; Playwright's own browser download is never used). Installs it
# with apt-get, as root, where it is missing, as infra/image/engine.sh installs docker.io.
set -euo pipefail
browser="${MODELPORT_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then
  echo "chromium: $("$browser" --version 2>/dev/null || echo present)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "browser.sh: chromium is missing; as root: apt-get install chromium" >&2; exit 2; }
echo "installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
echo "chromium: $("$browser" --version 2>/dev/null || echo installed)"
