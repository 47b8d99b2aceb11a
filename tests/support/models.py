"""Small real models for tests: trained in a second, saved the way users save theirs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train_iris(path: Path) -> tuple[Path, LogisticRegression]:
    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    joblib.dump(model, path)
    return path, model


IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


class FailsOnSomeInputs(LogisticRegression):
    """A model whose own code breaks on some inputs (first feature above 6.5): the server answers
    those with 500. Loading it needs the owner's trust (``trusted_globals``) and this module on
    the model server's path."""

    def predict(self, X):  # type: ignore[no-untyped-def]  # noqa: N803 - scikit-learn's name
        import numpy as np

        if (np.asarray(X, dtype=float)[:, 0] > 6.5).any():
            raise RuntimeError("this model breaks on a first feature above 6.5")
        return super().predict(X)


FAILING_GLOBAL = f"{__name__}.FailsOnSomeInputs"


def train_failing_iris(path: Path) -> Path:
    data = load_iris()
    joblib.dump(FailsOnSomeInputs(max_iter=500).fit(data.data, data.target), path)
    return path


class Escapee(LogisticRegression):
    """Owner-trusted code that tries what a hostile model would (the sandbox tests). While it is
    unpickled it writes ``probe["load_marker"]``; every ``predict`` answers, for each row, the sum
    of what worked: 1 read ``probe["secret"]``, 2 wrote ``probe["marker"]``, 4 connected to
    ``probe["port"]`` on loopback, 8 signalled the process ``probe["pid"]``, 16 had a shell write
    ``probe["shell_marker"]``. A confined server answers 0 and leaves no file behind."""

    probe: dict[str, Any]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        with contextlib.suppress(OSError):
            Path(self.probe["load_marker"]).write_text("written while the model was unpickled")

    def predict(self, X):  # type: ignore[no-untyped-def]  # noqa: N803 - scikit-learn's name
        import os
        import signal
        import socket
        import subprocess

        import numpy as np

        probe, worked = self.probe, 0
        attempts: list[tuple[int, Callable[[], object]]] = [
            (1, lambda: Path(probe["secret"]).read_text()),
            (2, lambda: Path(probe["marker"]).write_text("written by the model")),
            (4, lambda: socket.create_connection(("127.0.0.1", probe["port"]), timeout=2).close()),
            (8, lambda: os.kill(probe["pid"], signal.SIGTERM)),
            (16, lambda: subprocess.run(["/bin/sh", "-c", f"echo x > {probe['shell_marker']}"], check=True,  # noqa: S603
                                        capture_output=True, timeout=10)),
        ]
        for bit, attempt in attempts:
            try:
                attempt()
            except (OSError, subprocess.SubprocessError):
                continue
            worked |= bit
        return np.full(len(X), worked)


ESCAPEE_GLOBAL = f"{__name__}.Escapee"


def train_escapee(path: Path, probe: dict[str, Any]) -> Path:
    data = load_iris()
    model = Escapee(max_iter=500).fit(data.data, data.target)
    model.probe = probe
    joblib.dump(model, path)
    return path


def train_steps(path: Path, labels: list[int]) -> Path:
    """A one-feature tree that answers ``labels[i]`` around x = i (0, 1, 2, ...). Two of them with
    different labels at some points disagree exactly on the rows there (a known shadow share)."""
    from sklearn.tree import DecisionTreeClassifier

    joblib.dump(DecisionTreeClassifier().fit([[float(x)] for x in range(len(labels))], labels), path)
    return path


#: the live and candidate labels of the shadow tests: the two disagree exactly at x = 2
SHADOW_LIVE, SHADOW_CANDIDATE = [0, 1, 1], [0, 1, 0]
