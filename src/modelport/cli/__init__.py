"""The ``modelport`` command. Each area registers its commands on ``cli.app.app`` from its own module.

Every failure ends in one line on stderr and an exit code: commands raise ``client.CliError``
(see ``client.ExitCode``); anything else that escapes is a bug and still ends in one line and exit 1
(``MODELPORT_DEBUG=1`` lets the traceback through, to report it).
"""

from __future__ import annotations

import os
import sys

from modelport.cli.app import app


def main() -> None:
    # Imported here so that a missing optional extra (serving, local) only fails the command that
    # needs it, not `import modelport.cli`.
    from modelport.cli import commands  # noqa: F401

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if os.environ.get("MODELPORT_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(f"error: unexpected {type(exc).__name__}: {message} (MODELPORT_DEBUG=1 shows where)", file=sys.stderr)
        sys.exit(1)
