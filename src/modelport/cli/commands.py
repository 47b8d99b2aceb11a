"""Registers every command module on the one typer app (each module adds its commands on import)."""

from __future__ import annotations

import modelport.cli.login  # noqa: F401
import modelport.cli.predict  # noqa: F401
import modelport.cli.reconcile  # noqa: F401
import modelport.cli.resources  # noqa: F401
import modelport.cli.serve  # noqa: F401
import modelport.cli.tools  # noqa: F401
import modelport.cli.up  # noqa: F401
import modelport.cli.upload  # noqa: F401
import modelport.cli.users  # noqa: F401
