#!/usr/bin/env bash
# Deletes the kind cluster that up.sh created, and its kubeconfig.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER_NAME=${CLUSTER_NAME:-modelport}
KUBECONFIG_OUT=${KUBECONFIG_OUT:-$ROOT/.modelport/kind/kubeconfig}
command -v kind >/dev/null || { echo "down.sh: kind is not installed; nothing to remove" >&2; exit 0; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  kind delete cluster --name "$CLUSTER_NAME"
fi
rm -f "$KUBECONFIG_OUT"
