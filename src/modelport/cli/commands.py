"""Registers every command module on the one typer app (each module adds its commands on import)."""

from __future__ import annotations

from modelport.cli import login, predict, reconcile, resources, serve, tools, up, upload, users  # noqa: F401
