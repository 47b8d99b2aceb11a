#!/usr/bin/env bash
# Creates the kind cluster `modelport` with ingress-nginx (host port 30080) and MinIO (bucket
# `models`, credentials below; in-cluster endpoint minio.minio.svc:9000, from the host
# localhost:30900), then prints the kubeconfig path. Needs Docker and kind; helm and kubectl come
# from the project's tools (make tools) or PATH. Idempotent: re-running keeps the cluster.
#
#   infra/kind/up.sh                   # then: export KUBECONFIG=$(infra/kind/up.sh | tail -1)
#
# Environment: CLUSTER_NAME (modelport), KUBECONFIG_OUT (.modelport/kind/kubeconfig),
# MINIO_ACCESS_KEY / MINIO_SECRET_KEY (modelport / modelport-secret), INGRESS_NGINX_VERSION.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER_NAME=${CLUSTER_NAME:-modelport}
KUBECONFIG_OUT=${KUBECONFIG_OUT:-$ROOT/.modelport/kind/kubeconfig}
MINIO_ACCESS_KEY=${MINIO_ACCESS_KEY:-modelport}
MINIO_SECRET_KEY=${MINIO_SECRET_KEY:-modelport-secret}
MINIO_BUCKET_NAME=${MINIO_BUCKET_NAME:-models}
INGRESS_NGINX_VERSION=${INGRESS_NGINX_VERSION:-4.12.1}   # chart version of ingress-nginx
MINIO_IMAGE=${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}
MC_IMAGE=${MC_IMAGE:-quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z}
TOOLS_DIR=${MODELPORT_TOOLS_DIR:-$ROOT/.tools}

tool() {  # the project's helm/kubectl (from the npm layer package), else PATH
  local name=$1
  if [ -x "$TOOLS_DIR/bin/$name/$name" ]; then echo "$TOOLS_DIR/bin/$name/$name"; else command -v "$name"; fi
}
need() { command -v "$1" >/dev/null || { echo "up.sh: $1 is required ($2)" >&2; exit 1; }; }
need docker "kind runs the cluster in Docker"
need kind "https://kind.sigs.k8s.io"
docker info >/dev/null 2>&1 || { echo "up.sh: the Docker daemon is not reachable" >&2; exit 1; }
HELM=$(tool helm) || { echo "up.sh: helm not found (make tools)" >&2; exit 1; }
KUBECTL=$(tool kubectl) || { echo "up.sh: kubectl not found (make tools)" >&2; exit 1; }

mkdir -p "$(dirname "$KUBECONFIG_OUT")"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  kind create cluster --name "$CLUSTER_NAME" --config "$HERE/cluster.yaml" --kubeconfig "$KUBECONFIG_OUT" --wait 120s >&2
else
  kind get kubeconfig --name "$CLUSTER_NAME" >"$KUBECONFIG_OUT"
fi
export KUBECONFIG=$KUBECONFIG_OUT

# ingress-nginx on the ingress-ready node, bound to its ports 80/443 (which kind maps to 30080/30443)
"$HELM" upgrade --install ingress-nginx ingress-nginx \
  --repo https://kubernetes.github.io/ingress-nginx --version "$INGRESS_NGINX_VERSION" \
  --namespace ingress-nginx --create-namespace \
  --set controller.hostPort.enabled=true \
  --set controller.service.type=NodePort \
  --set controller.nodeSelector.ingress-ready=true \
  --set 'controller.tolerations[0].key=node-role.kubernetes.io/control-plane' \
  --set 'controller.tolerations[0].operator=Exists' \
  --set 'controller.tolerations[0].effect=NoSchedule' \
  --set controller.watchIngressWithoutClass=true \
  --set controller.ingressClassResource.default=true \
  --wait --timeout 5m >&2

# MinIO: one pod, credentials in a Secret, Service minio.minio:9000 (+ NodePort 30900), bucket created by a Job
"$KUBECTL" apply -f - >&2 <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: minio}
---
apiVersion: v1
kind: Secret
metadata: {name: minio-credentials, namespace: minio}
stringData: {MINIO_ROOT_USER: "$MINIO_ACCESS_KEY", MINIO_ROOT_PASSWORD: "$MINIO_SECRET_KEY"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: minio, labels: {app: minio}}
spec:
  replicas: 1
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
        - name: minio
          image: $MINIO_IMAGE
          args: ["server", "/data", "--console-address", ":9001"]
          envFrom: [{secretRef: {name: minio-credentials}}]
          ports: [{containerPort: 9000}, {containerPort: 9001}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}, periodSeconds: 2}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: minio}
spec:
  type: NodePort
  selector: {app: minio}
  ports:
    - {name: api, port: 9000, targetPort: 9000, nodePort: 30900}
YAML
"$KUBECTL" -n minio rollout status deployment/minio --timeout=180s >&2
"$KUBECTL" -n minio delete job minio-bucket --ignore-not-found >&2
"$KUBECTL" apply -f - >&2 <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: minio-bucket, namespace: minio}
spec:
  backoffLimit: 6
  template:
    spec:
      restartPolicy: OnFailure
      containers:
        - name: mc
          image: $MC_IMAGE
          envFrom: [{secretRef: {name: minio-credentials}}]
          command: ["/bin/sh", "-c"]
          args:
            - mc alias set local http://minio.minio.svc:9000 "\$MINIO_ROOT_USER" "\$MINIO_ROOT_PASSWORD" &&
              mc mb --ignore-existing local/$MINIO_BUCKET_NAME
YAML
"$KUBECTL" -n minio wait --for=condition=complete job/minio-bucket --timeout=180s >&2

cat >&2 <<INFO
kind cluster '$CLUSTER_NAME' is up.
  ingress:  http://localhost:30080   (predictions: http://localhost:30080/api/v1/predict/{id})
  MinIO:    in cluster minio.minio.svc:9000, from this host localhost:30900, bucket '$MINIO_BUCKET_NAME'
  settings: KUBECONFIG=$KUBECONFIG_OUT MINIO_ENDPOINT=localhost:30900 MINIO_ACCESS_KEY=$MINIO_ACCESS_KEY
            MINIO_SECRET_KEY=$MINIO_SECRET_KEY CLUSTER_S3_ENDPOINT=minio.minio.svc:9000
            INGRESS_HOST=localhost INGRESS_PORT=30080
INFO
echo "$KUBECONFIG_OUT"
