"""The Lambda functions' modules, loaded from the checkout as the platform runs them.

``functions/`` is not a package (each folder is a SAM CodeUri), so a module is imported by file
path under a private name. The checkout is ``$MODELPORT_ROOT`` if set, else the one this package
was installed from (an editable install, ``make env``), else the current directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from modelport.local.errors import PlatformError


def find_root() -> Path:
    """The checkout that holds functions/ and template.yaml."""
    here = Path(__file__).resolve().parents[3]
    for candidate in (Path(os.environ["MODELPORT_ROOT"]) if os.environ.get("MODELPORT_ROOT") else None, here,
                      Path.cwd()):
        if candidate is not None and (candidate / "functions" / "deployer" / "app.py").is_file():
            return candidate
    raise PlatformError("cannot find the modelport checkout (functions/deployer/app.py): run from the "
                        "repository or set MODELPORT_ROOT")


def load_function_module(root: Path, function: str) -> ModuleType:
    """``functions/{function}/app.py``, imported by path under a private module name; its
    ``build(settings, ...)`` makes the handler from the platform's own dependencies."""
    path = root / "functions" / function / "app.py"
    name = f"modelport_functions_{function}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PlatformError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
