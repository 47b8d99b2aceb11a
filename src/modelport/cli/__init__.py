"""The ``modelport`` command. Each area registers its commands on ``cli.app.app`` from its own module."""

from __future__ import annotations

from modelport.cli.app import app


def main() -> None:
    # Imported here so that a missing optional extra (serving, local) only fails the command that
    # needs it, not `import modelport.cli`.
    from modelport.cli import commands  # noqa: F401

    app()
