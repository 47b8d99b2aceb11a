"""Train the iris sample model and save it the way users save theirs: ``joblib.dump(model, path)``.

    python examples/train_iris.py                      # model.joblib here
    python examples/train_iris.py --out /tmp/iris.joblib --requirements /tmp/requirements.txt

Prints the model's own predictions for three sample rows, so a deployed endpoint can be checked
against them (the walk-through in examples/README.md does).
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

SAMPLE_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


def train(out: Path) -> LogisticRegression:
    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("model.joblib"), help="where to save the model")
    parser.add_argument("--requirements", type=Path, default=None,
                        help="also write a requirements.txt pinning the scikit-learn it was trained with")
    args = parser.parse_args()
    model = train(args.out)
    if args.requirements is not None:
        args.requirements.write_text(f"scikit-learn=={version('scikit-learn')}\n")
    print(json.dumps({"model": str(args.out), "rows": SAMPLE_ROWS,
                      "predictions": [int(p) for p in model.predict(SAMPLE_ROWS)]}))


if __name__ == "__main__":
    main()
