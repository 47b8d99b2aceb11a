"""A model's ``requirements.txt``: use the server's packages when they satisfy it, else install it.

Mechanism: the requirements are installed with ``uv pip install --target`` (``pip install --target``
when uv is missing) into ``MODEL_CACHE_DIR/envs/<python>-<sha256 of the file>``, and that directory
is put first on ``sys.path`` before anything imports numpy, scikit-learn or the model. This works for
pins that differ from the server's own packages because the server imports none of them before the
model is loaded (the HTTP layer needs only uvicorn, orjson and prometheus-client). The directory is
built under a temporary name and renamed when complete, so a crash never leaves a half environment,
and a restart with the same file reuses it without touching the network.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from modelport.domain.errors import BadRequest
from modelport.domain.requirements import parse_requirements, requirements_sha256
from modelport.serving.errors import ModelLoadError

log = logging.getLogger("modelport.serving")

INSTALL_TIMEOUT_SECONDS = 900


@dataclass
class Environment:
    """What the requirements made of the server's environment (for logs and model metadata)."""

    requirements: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)  # "name==version" put into the target dir
    target: str | None = None
    cached: bool = False

    def describe(self) -> dict[str, object]:
        return {"requirements": self.requirements, "installed": self.installed, "target": self.target,
                "cached": self.cached}


def unsatisfied(requirements: list[Requirement]) -> list[tuple[Requirement, str]]:
    """The requirements that the packages already importable do not satisfy, each with the reason."""
    missing: list[tuple[Requirement, str]] = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append((req, f"{req} (not installed)"))
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append((req, f"{req} (server has {version})"))
    return missing


def _python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


def _installer(target: Path, requirements_file: Path, constraints_file: Path, cache_dir: Path) -> list[str]:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        try:  # imported here: the uv package is optional (the uv binary is what is wanted)
            from uv import find_uv_bin  # type: ignore[import-not-found]

            uv = find_uv_bin()
        except (ImportError, FileNotFoundError):
            uv = ""
    if uv:
        return [uv, "pip", "install", "--python", sys.executable, "--target", str(target),
                "--no-progress", "--cache-dir", str(cache_dir / "uv-cache"), "-r", str(requirements_file),
                "-c", str(constraints_file)]
    return [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-input",
            "--disable-pip-version-check", "--cache-dir", str(cache_dir / "pip-cache"),
            "-r", str(requirements_file), "-c", str(constraints_file)]


def _installed_in(target: Path) -> list[str]:
    found = []
    for dist in metadata.distributions(path=[str(target)]):
        found.append(f"{dist.metadata['Name']}=={dist.version}")
    return sorted(found, key=str.lower)


def _activate(target: Path) -> None:
    path = str(target)
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    stale = [name for name in ("numpy", "sklearn", "scipy", "joblib") if name in sys.modules]
    if stale:
        log.warning("modules imported before the model environment was activated: %s", ", ".join(stale))


def prepare(requirements_path: Path, cache_dir: Path, restart: Callable[[], object] | None = None) -> Environment:
    """Make the environment that ``requirements_path`` asks for importable in this process.

    ``restart`` is given by a pre-warmed server (``standby``), which imported numpy and scikit-learn
    before it knew the model: when packages must be installed it is called and does not return (the
    process becomes a fresh server, ``os.execve``)."""
    data = requirements_path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError("requirements.txt is not UTF-8 text.") from None
    try:
        requirements = parse_requirements(text)
    except BadRequest as exc:
        raise ModelLoadError(f"The model's {exc.message}") from None
    env = Environment(requirements=[str(r) for r in requirements])
    if not requirements:
        return env
    missing_pairs = unsatisfied(requirements)
    missing = [reason for _, reason in missing_pairs]
    if not missing_pairs:
        log.info("requirements.txt is satisfied by the server's packages; nothing to install")
        return env
    if restart is not None:
        # a standby imported numpy and scikit-learn before it knew this model: an environment put
        # in front of them now would come too late, so this process starts afresh (same pid)
        log.info("requirements.txt needs %s: restarting without the pre-imported modules", "; ".join(missing))
        restart()

    digest = requirements_sha256(data)
    envs = cache_dir / "envs"
    target = envs / f"{_python_tag()}-{digest}"
    env.target = str(target)
    if (target / ".complete").exists():
        env.cached = True
        env.installed = _installed_in(target)
        log.info("using cached environment %s: %s", target, ", ".join(env.installed))
        _activate(target)
        return env

    log.info("installing requirements (%s) into %s", "; ".join(missing), target)
    envs.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=envs, prefix=f".{digest[:12]}-"))
    # Install only what the server lacks; every line of the file still constrains the resolver, so
    # a dependency pulled in for a missing package cannot break a pin the server already satisfies.
    wanted = staging.with_name(staging.name + ".install.txt")
    wanted.write_text("".join(f"{req}\n" for req, _ in missing_pairs))
    constraints = staging.with_name(staging.name + ".constraints.txt")
    constraints.write_text("".join(f"{req}\n" for req in requirements if not req.extras))
    argv = _installer(staging, wanted, constraints, cache_dir)
    try:
        result = subprocess.run(  # noqa: S603 - argv is ours, the file was validated
            argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS,
            env={**os.environ, "PIP_NO_INPUT": "1", "UV_NO_CONFIG": "1"},
        )
    except subprocess.TimeoutExpired:
        wanted.unlink(missing_ok=True)
        constraints.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(
            f"Installing the model's requirements ({'; '.join(missing)}) took longer than "
            f"{INSTALL_TIMEOUT_SECONDS}s and was stopped."
        ) from None
    wanted.unlink(missing_ok=True)
    constraints.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        detail = _summarise_failure(result.stderr or result.stdout)
        raise ModelLoadError(
            f"Cannot install the model's requirements.txt ({'; '.join(missing)}): {detail} "
            "Fix the pins in requirements.txt (the versions must exist on the package index for "
            f"Python {sys.version_info.major}.{sys.version_info.minor}) and upload it again."
        )
    (staging / ".complete").write_text("\n".join(env.requirements) + "\n")
    try:
        staging.rename(target)
    except OSError:  # another process finished the same environment first
        shutil.rmtree(staging, ignore_errors=True)
    env.installed = _installed_in(target)
    log.info("installed into %s: %s", target, ", ".join(env.installed))
    _activate(target)
    return env


def _summarise_failure(output: str) -> str:
    """The informative lines of an installer's error output, as one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Using ", "Resolved", "Prepared", "Audited"))]
    text = " ".join(keep[-6:]) or "the installer failed without saying why."
    text = text.replace("╰─▶", "").replace("×", "").strip()
    if len(text) > 600:
        text = text[:600] + "..."
    return text if text.endswith(".") else text + "."
