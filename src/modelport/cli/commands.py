"""Registers every command module on the one typer app (each module adds its commands on import)."""

from __future__ import annotations

from modelport.cli import serve, tools, users  # noqa: F401
