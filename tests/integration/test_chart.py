"""charts/model-serving rendered by the real helm binary, for every values profile under ci/.

What is checked is what a user (or the deployer of issue 4) would notice: the ingress path and
host, where the credentials come from, how the pod is locked down, the probes, labels, replica
count, which optional objects exist, the URL NOTES.txt prints, and that bad values are refused
by values.schema.json before anything reaches a cluster. Every rendered object also passes
``kubernetes-validate --strict`` against the newest Kubernetes version the package bundles, but
the optional ServiceMonitor: kubernetes-validate bundles no CRD schemas, so that one is checked
against SERVICE_MONITOR_SHAPE below (strict: no field the chart does not mean to write).

No cluster is contacted: ``helm template`` and ``helm install --dry-run=client`` only render,
and KUBECONFIG points at nothing.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import SchemaNotFoundError
from kubernetes_validate.utils import latest_version

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "model-serving"
CI = CHART / "ci"
PROFILES = ["minimal-values.yaml", "full-values.yaml", "existing-secret-values.yaml"]
RELEASE = "model-7-1700000000"
NAMESPACE = "user-3"
SCHEMA_ERROR = "don't meet the specifications of the schema"

Manifest = list[dict[str, Any]]

# The part of the Prometheus operator's ServiceMonitor (monitoring.coreos.com/v1) the chart writes,
# with the field names, types and the duration pattern of the operator's CRD
# (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml); every object is
# closed, so a misspelt or unintended field fails here as kubernetes-validate --strict would fail it.
DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SHAPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": STRING_MAP},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["action"],
                                    "properties": {
                                        "action": {"enum": ["labeldrop", "labelkeep"]},
                                        "regex": {"type": "string"},
                                    },
                                },
                            },
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["key"],
                                        "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class Helm:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-such-kubeconfig"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=60)

    @staticmethod
    def value_args(profile: str | None, sets: Sequence[str], values_file: Path | None) -> list[str]:
        args: list[str] = []
        if profile:
            args += ["-f", str(CI / profile)]
        if values_file:
            args += ["-f", str(values_file)]
        for s in sets:
            args += ["--set", s]
        return args

    def template(
        self, profile: str | None = None, *sets: str, values_file: Path | None = None, release: str = RELEASE
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *self.value_args(profile, sets, values_file),
        )

    def render(
        self, profile: str | None = None, *sets: str, values_file: Path | None = None, release: str = RELEASE
    ) -> Manifest:
        out = self.template(profile, *sets, values_file=values_file, release=release)
        assert out.returncode == 0, out.stderr
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    def notes(self, profile: str, *sets: str) -> str:
        out = self.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "--output",
            "json",
            *self.value_args(profile, sets, None),
        )
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["info"]["notes"])


@pytest.fixture(scope="module")
def helm(tools: Any, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(Path(tools.helm), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Manifest]:
    return {profile: helm.render(profile) for profile in PROFILES}


def by_kind(manifest: Manifest, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifest if doc["kind"] == kind]


def one(manifest: Manifest, kind: str) -> dict[str, Any]:
    found = by_kind(manifest, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(manifest: Manifest) -> dict[str, Any]:
    containers = one(manifest, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(manifest: Manifest) -> dict[str, Any]:
    """name -> value, or name -> valueFrom for variables taken from elsewhere."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest)["env"]}


def validate_object(doc: dict[str, Any]) -> None:
    """kubernetes-validate --strict; the ServiceMonitor (a CRD kind it has no schema for) against
    SERVICE_MONITOR_SHAPE instead."""
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        with pytest.raises(SchemaNotFoundError):
            kubernetes_validate.validate(doc, latest_version(), strict=True)
        jsonschema.validate(doc, SERVICE_MONITOR_SHAPE)
    else:
        # A kind without a bundled schema raises SchemaNotFoundError: that fails the test too.
        kubernetes_validate.validate(doc, latest_version(), strict=True)


def ingress_rule(manifest: Manifest) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = one(manifest, "Ingress")["spec"]
    assert len(spec["rules"]) == 1
    rule = spec["rules"][0]
    assert len(rule["http"]["paths"]) == 1
    return rule, rule["http"]["paths"][0]


# --- lint and Kubernetes schemas -------------------------------------------------------------


def test_every_profile_exists() -> None:
    assert sorted(p.name for p in CI.glob("*.yaml")) == sorted(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_strict_is_clean(helm: Helm, profile: str) -> None:
    out = helm.run("lint", "--strict", str(CHART), "-f", str(CI / profile))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_passes_kubernetes_validate_strict(rendered: dict[str, Manifest], profile: str) -> None:
    version = latest_version()
    assert [int(p) for p in version.split(".")[:2]] >= [1, 33], version
    manifest = rendered[profile]
    assert manifest
    for doc in manifest:
        validate_object(doc)


def test_kubernetes_validate_cli_agrees(helm: Helm, tmp_path: Path) -> None:
    out = helm.template("full-values.yaml")
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "full.yaml"
    manifest.write_text(out.stdout)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            latest_version(),
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout, result.stdout
    # The one warning is the ServiceMonitor's missing CRD schema (checked by validate_object).
    warnings = [line for line in result.stdout.splitlines() if "WARN" in line]
    assert len(warnings) == 1 and "kind ServiceMonitor with api version monitoring.coreos.com/v1" in warnings[0], (
        result.stdout
    )


# --- what a user notices ---------------------------------------------------------------------


def test_minimal_profile_objects(rendered: dict[str, Manifest]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered["minimal-values.yaml"])
    assert kinds == ["Deployment", "Ingress", "Secret", "Service", "ServiceAccount"]
    for doc in rendered["minimal-values.yaml"]:
        assert doc["metadata"]["name"].startswith(RELEASE)
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_ingress_serves_the_deployment_path_on_the_host(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["minimal-values.yaml"]
    ingress = one(manifest, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    rule, path = ingress_rule(manifest)
    assert rule["host"] == "localhost"
    assert path["path"] == "/api/v1/predict/7"
    assert path["pathType"] == "Prefix"
    service = one(manifest, "Service")
    assert path["backend"]["service"]["name"] == service["metadata"]["name"] == RELEASE
    assert path["backend"]["service"]["port"] == {"name": "http"}
    # No rewrite: the server itself serves everything under the prefix.
    assert not any("rewrite" in k for k in (ingress["metadata"].get("annotations") or {}))
    assert env(manifest)["ROOT_PATH"] == "/api/v1/predict/7"


def test_ingress_base_path_host_and_class_come_from_values(helm: Helm) -> None:
    manifest = helm.render(
        "minimal-values.yaml",
        "ingress.basePath=/predict/",
        "ingress.host=models.example.org",
        "ingress.className=traefik",
    )
    rule, path = ingress_rule(manifest)
    assert (rule["host"], path["path"]) == ("models.example.org", "/predict/7")
    assert one(manifest, "Ingress")["spec"]["ingressClassName"] == "traefik"
    assert env(manifest)["ROOT_PATH"] == "/predict/7"


def test_ingress_can_be_disabled(helm: Helm) -> None:
    manifest = helm.render("minimal-values.yaml", "ingress.enabled=false")
    assert not by_kind(manifest, "Ingress")
    assert env(manifest)["ROOT_PATH"] == "/api/v1/predict/7"


def test_tls_is_rendered_for_the_host(rendered: dict[str, Manifest]) -> None:
    ingress = one(rendered["full-values.yaml"], "Ingress")
    assert ingress["spec"]["tls"] == [{"hosts": ["predict.example.com"], "secretName": "predict-example-com-tls"}]
    rule, path = ingress_rule(rendered["full-values.yaml"])
    assert (rule["host"], path["path"]) == ("predict.example.com", "/api/v1/predict/42")


def test_service_routes_port_80_to_the_server(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["minimal-values.yaml"]
    service = one(manifest, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert container(manifest)["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    pod_labels = one(manifest, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_server_environment_is_the_contract(rendered: dict[str, Manifest]) -> None:
    e = env(rendered["minimal-values.yaml"])
    assert container(rendered["minimal-values.yaml"])["command"] == ["python", "-m", "modelport.serving"]
    assert e["MODEL_URI"] == "s3://models/models/3/versions/5/model.joblib"
    assert e["MODEL_NAME"] == "model"
    assert e["PORT"] == "8080"
    assert e["MODEL_CACHE_DIR"] == "/tmp/modelport"
    assert e["MINIO_ENDPOINT"] == "minio:9000"
    assert e["MINIO_USE_SSL"] == "false"
    assert e["AWS_REGION"] == "us-east-1"
    for optional in ("MODEL_SHA256", "REQUIREMENTS_URI", "REQUIREMENTS_SHA256", "PREDICT_TOKEN_SHA256",
                     "MODEL_TRUSTED_GLOBALS"):
        assert optional not in e

    full = env(rendered["full-values.yaml"])
    assert full["MODEL_SHA256"] == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert full["REQUIREMENTS_URI"] == "s3://models/models/3/versions/5/requirements.txt"
    assert full["REQUIREMENTS_SHA256"] == "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
    assert full["MODEL_NAME"] == "iris"
    # the version owner's own trust list, for this model only
    assert full["MODEL_TRUSTED_GLOBALS"] == "mypkg.transformers.MyTransformer,mypkg.MyModel"
    assert full["MINIO_USE_SSL"] == "true"
    assert full["MINIO_ENDPOINT"] == "minio.storage.svc:9000"
    assert full["MICROBATCH_MAX_BATCH"] == "32"
    # a protected prediction URL: only the token's digest reaches the pod
    assert full["PREDICT_TOKEN_SHA256"] == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_credentials_come_from_the_charts_secret_by_reference(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["minimal-values.yaml"]
    secret = one(manifest, "Secret")
    name = secret["metadata"]["name"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"accessKey": "minioadmin", "secretKey": "minioadmin-secret"}
    e = env(manifest)
    assert e["MINIO_ACCESS_KEY"] == {"secretKeyRef": {"name": name, "key": "accessKey"}}
    assert e["MINIO_SECRET_KEY"] == {"secretKeyRef": {"name": name, "key": "secretKey"}}
    deployment_text = yaml.safe_dump(one(manifest, "Deployment"))
    for value in ("minioadmin", base64.b64encode(b"minioadmin").decode()):
        assert value not in deployment_text
    # A changed credential rolls the pods.
    annotations = one(manifest, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/s3-secret"]) == 64


def test_existing_secret_is_referenced_and_none_is_created(rendered: dict[str, Manifest]) -> None:
    manifest = rendered["existing-secret-values.yaml"]
    assert not by_kind(manifest, "Secret")
    e = env(manifest)
    assert e["MINIO_ACCESS_KEY"] == {"secretKeyRef": {"name": "modelport-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}
    assert e["MINIO_SECRET_KEY"] == {
        "secretKeyRef": {"name": "modelport-s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    annotations = one(manifest, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/s3-secret" not in annotations


def test_existing_secret_wins_over_plain_values(helm: Helm) -> None:
    manifest = helm.render("minimal-values.yaml", "s3.existingSecret=shared-s3")
    assert not by_kind(manifest, "Secret")
    assert env(manifest)["MINIO_ACCESS_KEY"]["secretKeyRef"]["name"] == "shared-s3"
    assert "minioadmin" not in yaml.safe_dump(manifest)


def test_no_credentials_means_no_secret_and_no_credential_variables(helm: Helm) -> None:
    manifest = helm.render("minimal-values.yaml", "s3.accessKey=", "s3.secretKey=", "s3.endpoint=")
    assert not by_kind(manifest, "Secret")
    e = env(manifest)
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ENDPOINT"):
        assert name not in e


@pytest.mark.parametrize("profile", PROFILES)
def test_pod_is_locked_down(rendered: dict[str, Manifest], profile: str) -> None:
    manifest = rendered[profile]
    pod = one(manifest, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(manifest)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place is an emptyDir at /tmp, where MODEL_CACHE_DIR lives.
    assert container(manifest)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert [v["name"] for v in pod["volumes"] if "emptyDir" in v] == ["tmp"]
    assert env(manifest)["MODEL_CACHE_DIR"].startswith("/tmp/")
    account = one(manifest, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert container(manifest)["resources"]["requests"]["cpu"]
    assert container(manifest)["resources"]["limits"]["memory"]


@pytest.mark.parametrize("profile", PROFILES)
def test_probes(rendered: dict[str, Manifest], profile: str) -> None:
    c = container(rendered[profile])
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = c["startupProbe"]
    # Long enough for a model download and a requirements install.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("profile", PROFILES)
def test_labels_on_every_object(rendered: dict[str, Manifest], profile: str) -> None:
    manifest = rendered[profile]
    deployment_id = {"minimal-values.yaml": "7", "full-values.yaml": "42", "existing-secret-values.yaml": "1234567"}[
        profile
    ]
    for doc in manifest:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "model-serving"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "modelport"
        assert labels["modelport.io/deployment-id"] == deployment_id
        assert labels["helm.sh/chart"] == "model-serving-0.1.0"
    template = one(manifest, "Deployment")["spec"]["template"]["metadata"]
    assert template["labels"]["modelport.io/deployment-id"] == deployment_id
    selector = one(manifest, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["labels"].items()
    assert template["annotations"]["prometheus.io/scrape"] == "true"
    assert template["annotations"]["prometheus.io/port"] == "8080"
    assert template["annotations"]["prometheus.io/path"] == "/metrics"


def test_a_large_deployment_id_renders_as_digits(helm: Helm) -> None:
    # Values files carry numbers as floats; 1234567 must not become 1.234567e+06.
    manifest = helm.render("existing-secret-values.yaml")
    assert ingress_rule(manifest)[1]["path"] == "/api/v1/predict/1234567"
    manifest = helm.render("minimal-values.yaml", "deploymentId=98765432101")
    assert ingress_rule(manifest)[1]["path"] == "/api/v1/predict/98765432101"


def test_replicas_follow_values(helm: Helm, rendered: dict[str, Manifest]) -> None:
    assert one(rendered["minimal-values.yaml"], "Deployment")["spec"]["replicas"] == 1
    assert one(helm.render("minimal-values.yaml", "replicaCount=3"), "Deployment")["spec"]["replicas"] == 3
    # Zero is allowed (scaled down, still installed).
    assert one(helm.render("minimal-values.yaml", "replicaCount=0"), "Deployment")["spec"]["replicas"] == 0
    strategy = one(rendered["minimal-values.yaml"], "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_hpa_only_when_enabled(helm: Helm, rendered: dict[str, Manifest]) -> None:
    assert not by_kind(rendered["minimal-values.yaml"], "HorizontalPodAutoscaler")
    full = rendered["full-values.yaml"]
    hpa = one(full, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    cpu = hpa["spec"]["metrics"][0]["resource"]
    assert cpu["name"] == "cpu" and cpu["target"]["averageUtilization"] == 60
    # The HPA owns the replica count: the Deployment leaves it out.
    assert "replicas" not in one(full, "Deployment")["spec"]

    off = helm.render("full-values.yaml", "autoscaling.enabled=false")
    assert not by_kind(off, "HorizontalPodAutoscaler")
    assert one(off, "Deployment")["spec"]["replicas"] == 2


def test_pdb_only_when_enabled(helm: Helm, rendered: dict[str, Manifest]) -> None:
    assert not by_kind(rendered["minimal-values.yaml"], "PodDisruptionBudget")
    pdb = one(rendered["full-values.yaml"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    pct = one(
        helm.render(
            "minimal-values.yaml",
            "podDisruptionBudget.enabled=true",
            "podDisruptionBudget.minAvailable=null",
            "podDisruptionBudget.maxUnavailable=50%",
        ),
        "PodDisruptionBudget",
    )
    assert pct["spec"] == {"maxUnavailable": "50%", "selector": pdb["spec"]["selector"]}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector of matchLabels only (all the chart writes) against an object's labels."""
    assert set(selector) == {"matchLabels"}, selector
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= labels.items()


def test_service_monitor_selects_exactly_the_releases_service_and_port(
    helm: Helm, rendered: dict[str, Manifest]
) -> None:
    manifest = rendered["full-values.yaml"]
    monitor = one(manifest, "ServiceMonitor")
    service = one(manifest, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == RELEASE and monitor["metadata"]["namespace"] == NAMESPACE
    # metrics.serviceMonitor.labels, for the Prometheus's serviceMonitorSelector, beside the chart's own
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert selects(spec["selector"], service["metadata"]["labels"])
    # the labels the Service itself selects its pods by: the release, nothing wider
    assert spec["selector"]["matchLabels"] == service["spec"]["selector"]
    # ... so no other release's Service in the namespace matches
    other = one(helm.render("full-values.yaml", release="model-8-1700000001"), "Service")
    assert not selects(spec["selector"], other["metadata"]["labels"])

    (endpoint,) = spec["endpoints"]
    # the Service's port by name, which reaches the container's port of that name
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] == "http"
    assert {"name": port["targetPort"], "containerPort": 8080, "protocol": "TCP"} in container(manifest)["ports"]
    # the same path the scrape annotations name
    annotations = one(manifest, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    # the server's own "endpoint" label survives: the operator's target label of that name is dropped,
    # and a model server never overrides the namespace and pod labels Prometheus attaches
    assert endpoint["relabelings"] == [{"action": "labeldrop", "regex": "endpoint"}]
    assert endpoint["honorLabels"] is False
    assert "authorization" not in endpoint
    jsonschema.validate(monitor, SERVICE_MONITOR_SHAPE)


def test_service_monitor_only_when_enabled(helm: Helm, rendered: dict[str, Manifest]) -> None:
    assert not by_kind(rendered["minimal-values.yaml"], "ServiceMonitor")
    assert not by_kind(rendered["existing-secret-values.yaml"], "ServiceMonitor")
    assert not by_kind(helm.render("full-values.yaml", "metrics.serviceMonitor.enabled=false"), "ServiceMonitor")

    on = helm.render("minimal-values.yaml", "metrics.serviceMonitor.enabled=true")
    monitor = one(on, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == one(on, "Service")["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        "http",
        "/metrics",
        "30s",
        "10s",
    )
    # the annotations stay unless turned off
    annotations = one(on, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    for doc in on:
        validate_object(doc)

    # "" leaves Prometheus's own interval and timeout
    bare = one(
        helm.render(
            "minimal-values.yaml",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=",
            "metrics.serviceMonitor.scrapeTimeout=",
        ),
        "ServiceMonitor",
    )
    assert "interval" not in bare["spec"]["endpoints"][0] and "scrapeTimeout" not in bare["spec"]["endpoints"][0]


def test_service_monitor_of_a_protected_deployment_sends_the_token_from_a_secret(helm: Helm) -> None:
    manifest = helm.render(
        "full-values.yaml",
        "metrics.serviceMonitor.tokenSecret.name=model-42-token",
        "metrics.serviceMonitor.tokenSecret.key=TOKEN",
    )
    (endpoint,) = one(manifest, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "model-42-token", "key": "TOKEN"}}
    validate_object(one(manifest, "ServiceMonitor"))


def test_network_policy_admits_the_ingress_controller_and_reaches_only_store_and_dns(
    rendered: dict[str, Manifest],
) -> None:
    assert not by_kind(rendered["minimal-values.yaml"], "NetworkPolicy")
    policy = one(rendered["full-values.yaml"], "NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    ingress, prometheus = policy["ingress"]
    (peer,) = ingress["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    # networkPolicy.extraIngress: the profile's Prometheus may scrape /metrics.
    assert prometheus["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert prometheus["ports"] == [{"port": "http", "protocol": "TCP"}]

    dns, store, extra = policy["egress"]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert store["ports"] == [{"port": 9000, "protocol": "TCP"}]
    assert {"ipBlock": {"cidr": "10.96.0.0/12"}} in store["to"]
    assert {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "minio"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}},
    } in store["to"]
    assert extra == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443, "protocol": "TCP"}]}


def test_network_policy_defaults_reach_an_in_cluster_minio(helm: Helm) -> None:
    policy = one(helm.render("minimal-values.yaml", "networkPolicy.enabled=true"), "NetworkPolicy")["spec"]
    dns, store = policy["egress"]
    assert store["to"] == [{"podSelector": {"matchLabels": {"app": "minio"}}, "namespaceSelector": {}}]
    assert store["ports"] == [{"port": 9000, "protocol": "TCP"}]


def test_a_live_release_with_a_shadow_copies_to_its_service_which_only_it_may_reach(helm: Helm, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.json"  # as the deployer passes values: a file, the tolerance a number
    mirror.write_text(json.dumps({"mirror": {"release": "model-7-shadow", "percent": 25, "tolerance": 0.01}}))
    live = helm.render("minimal-values.yaml", "networkPolicy.enabled=true", values_file=mirror)
    e = env(live)
    assert (e["MIRROR_URL"], e["MIRROR_PERCENT"], e["MIRROR_TOLERANCE"]) == ("http://model-7-shadow:80", "25", "0.01")
    to_shadow = one(live, "NetworkPolicy")["spec"]["egress"][-1]
    assert to_shadow == {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-serving",
                                                                 "app.kubernetes.io/instance": "model-7-shadow"}}}],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}

    shadow = helm.render("minimal-values.yaml", "networkPolicy.enabled=true", f"mirroredBy={RELEASE}")
    assert not any(name.startswith("MIRROR_") for name in env(shadow))
    from_live = one(shadow, "NetworkPolicy")["spec"]["ingress"][-1]
    assert from_live["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-serving",
                                                                  "app.kubernetes.io/instance": RELEASE}}}]
    # without a shadow, nothing of either
    plain = helm.render("minimal-values.yaml", "networkPolicy.enabled=true")
    assert not any(name.startswith("MIRROR_") for name in env(plain))
    assert len(one(plain, "NetworkPolicy")["spec"]["ingress"]) == 1


@pytest.mark.parametrize(
    ("profile", "sets", "url"),
    [
        ("minimal-values.yaml", (), "http://localhost/api/v1/predict/7"),
        ("full-values.yaml", (), "https://predict.example.com/api/v1/predict/42"),
        ("existing-secret-values.yaml", (), "http://localhost:30080/api/v1/predict/1234567"),
    ],
)
def test_notes_print_the_url(helm: Helm, profile: str, sets: tuple[str, ...], url: str) -> None:
    notes = helm.notes(profile, *sets)
    assert f"URL: {url}\n" in notes
    assert f"curl -X POST {url}/predict" in notes
    assert "minioadmin" not in notes


def test_notes_without_ingress_point_at_the_service(helm: Helm) -> None:
    notes = helm.notes("minimal-values.yaml", "ingress.enabled=false")
    assert "URL:" not in notes
    assert f"http://{RELEASE}.{NAMESPACE}.svc:80/api/v1/predict/7" in notes


def test_the_deployers_values_contract_is_accepted(helm: Helm, tmp_path: Path) -> None:
    """Exactly the keys issue 4's deployer passes, with their documented shapes."""
    values = {
        "deploymentId": 7,
        "image": {"repository": "ghcr.io/modelport/model-server", "tag": "0.1.0", "pullPolicy": "IfNotPresent"},
        "replicaCount": 1,
        "model": {
            "bucket": "models",
            "key": "models/3/versions/5/model.joblib",
            "sha256": "",
            "requirementsKey": "",
            "requirementsSha256": "",
            "name": "model",
        },
        "s3": {
            "endpoint": "minio:9000",
            "useSSL": False,
            "region": "us-east-1",
            "existingSecret": "",
            "accessKey": "AKIDEXAMPLE",
            "secretKey": "wJalrXUtnFEMI",
        },
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "localhost",
            "basePath": "/api/v1/predict",
            "annotations": {},
            "tls": [],
        },
        "service": {"type": "ClusterIP", "port": 80},
    }
    path = tmp_path / "deployer-values.json"
    path.write_text(json.dumps(values))
    manifest = helm.render(values_file=path)
    assert ingress_rule(manifest)[1]["path"] == "/api/v1/predict/7"
    assert "wJalrXUtnFEMI" not in yaml.safe_dump(one(manifest, "Deployment"))
    for doc in manifest:
        validate_object(doc)


# --- bad values are refused by the schema ----------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "where"),
    [
        (("replicaCount=101",), "/replicaCount"),
        (("replicaCount=-1",), "/replicaCount"),
        (("model.key=",), "/model/key"),
        (("model.key=null",), "'key'"),
        (("model.bucket=",), "/model/bucket"),
        (("model.bucket=Not_A_Bucket",), "/model/bucket"),
        (("deploymentId=0",), "/deploymentId"),
        (("deploymentId=-3",), "/deploymentId"),
        (("deploymentId=abc",), "/deploymentId"),
        (("deploymentId=1.5",), "/deploymentId"),
        (("deploymentId=null",), "deploymentId"),
        (("image.repository=",), "/image/repository"),
        (("image.tag=",), "/image"),
        (("image.pullPolicy=Sometimes",), "/image/pullPolicy"),
        (("ingress.host=Bad_Host!",), "/ingress/host"),
        (("ingress.basePath=api/v1/predict",), "/ingress/basePath"),
        (("model.sha256=not-a-hash",), "/model/sha256"),
        (("auth.tokenSha256=mpt_the-token-itself",), "/auth/tokenSha256"),
        (("s3.secretKey=",), "/s3"),
        (("service.port=70000",), "/service/port"),
        (("securityContext.runAsUser=0",), "/securityContext/runAsUser"),
        (("replicas=3",), "replicas"),
        (("metrics.serviceMonitor.interval=30",), "/metrics/serviceMonitor/interval"),
        (("metrics.serviceMonitor.interval=30sec",), "/metrics/serviceMonitor/interval"),
        (("metrics.serviceMonitor.scrapeTimeout=ten",), "/metrics/serviceMonitor/scrapeTimeout"),
        (("metrics.serviceMonitor.labels.release=a b",), "/metrics/serviceMonitor/labels"),
        (("metrics.serviceMonitor.labels.bad/key/x=1",), "/metrics/serviceMonitor/labels"),
        (("metrics.serviceMonitor.tokenSecret.key=",), "/metrics/serviceMonitor/tokenSecret/key"),
        (("metrics.serviceMonitor.enabled=yes",), "/metrics/serviceMonitor/enabled"),
        (("metrics.serviceMonitor.namespace=monitoring",), "namespace"),
        (("mirror.percent=0",), "/mirror/percent"),
        (("mirror.percent=101",), "/mirror/percent"),
        (("mirror.release=Not A Release",), "/mirror/release"),
        (("mirror.tolerance=-1",), "/mirror/tolerance"),
        (("mirroredBy=a_b",), "/mirroredBy"),
    ],
)
def test_bad_values_fail_with_a_schema_error(helm: Helm, sets: tuple[str, ...], where: str) -> None:
    out = helm.template("minimal-values.yaml", *sets)
    assert out.returncode != 0
    assert SCHEMA_ERROR in out.stderr, out.stderr
    assert where in out.stderr, out.stderr


def test_a_string_deployment_id_of_digits_is_accepted(helm: Helm) -> None:
    out = helm.run(
        "template", RELEASE, str(CHART), "-f", str(CI / "minimal-values.yaml"), "--set-string", "deploymentId=19"
    )
    assert out.returncode == 0, out.stderr
    assert "/api/v1/predict/19" in out.stdout
    bad = helm.run(
        "template", RELEASE, str(CHART), "-f", str(CI / "minimal-values.yaml"), "--set-string", "deploymentId=019"
    )
    assert bad.returncode != 0 and SCHEMA_ERROR in bad.stderr


def test_the_chart_alone_needs_a_deployment_and_a_model(helm: Helm) -> None:
    out = helm.template()
    assert out.returncode != 0
    assert SCHEMA_ERROR in out.stderr
    assert "/deploymentId" in out.stderr and "/model/bucket" in out.stderr and "/model/key" in out.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"),
            "must not exceed autoscaling.maxReplicas",
        ),
        (("autoscaling.enabled=true", "resources.requests=null"), "needs resources.requests.cpu"),
        (("podDisruptionBudget.enabled=true", "podDisruptionBudget.maxUnavailable=1"), "not both"),
    ],
)
def test_inconsistent_values_fail_with_a_message(helm: Helm, sets: tuple[str, ...], message: str) -> None:
    out = helm.template("minimal-values.yaml", *sets)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_an_empty_host_and_class_match_any_host_on_the_default_class(helm: Helm) -> None:
    manifest = helm.render("minimal-values.yaml", "ingress.host=", "ingress.className=")
    ingress = one(manifest, "Ingress")
    assert "ingressClassName" not in ingress["spec"]
    rule, path = ingress_rule(manifest)
    assert "host" not in rule and path["path"] == "/api/v1/predict/7"
    for doc in manifest:
        validate_object(doc)
