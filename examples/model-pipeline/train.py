"""Train a small classifier, log it to MLflow and register it as the challenger.

Step 1 of the model pipeline (.github/workflows/model-pipeline.yml): train -> validate -> promote.
The server comes from MLflow's own client variables, exactly what `mlflow-stack models` reads:
MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD and, for a private CA,
MLFLOW_TRACKING_SERVER_CERT_PATH.

The model is a logistic regression in plain numpy, logged as an MLflow pyfunc: it starts in a second
where scikit-learn's import alone takes several (the pipeline runs three times in the test suite).
Swap in your framework's `mlflow.<flavor>.log_model`; the pipeline's steps do not change. The data is
synthetic with a fixed seed so the example runs anywhere; `--features` is the one knob — how many
of the features the model sees — so a run can be made better or worse on purpose.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import cloudpickle
import mlflow
import numpy as np

METRIC = "val_auc"
FEATURES = 20


def load_data(seed: int, rows: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and validation split of a synthetic binary problem: feature i matters 0.8**i as much
    as the first, so every feature left out costs a little accuracy."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, FEATURES))
    weights = 1.5 * 0.8 ** np.arange(FEATURES)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(features @ weights)))).astype(float)
    cut = int(rows * 0.7)
    return features[:cut], features[cut:], labels[:cut], labels[cut:]


def fit(features: np.ndarray, labels: np.ndarray, steps: int = 300, rate: float = 0.5) -> np.ndarray:
    """Logistic regression by gradient descent; returns the weights, the intercept last."""
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros(design.shape[1])
    for _ in range(steps):
        predicted = 1 / (1 + np.exp(-(design @ weights)))
        weights -= rate * design.T @ (predicted - labels) / len(labels)
    return weights


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic of the scores' ranks."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class LogisticModel(mlflow.pyfunc.PythonModel):
    """What gets served: the probability of the positive class for the first `n_features` columns."""

    def __init__(self, weights: np.ndarray, n_features: int) -> None:
        self.weights = weights
        self.n_features = n_features

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        features = np.asarray(model_input, dtype=float)[:, : self.n_features]
        return 1 / (1 + np.exp(-(features @ self.weights[:-1] + self.weights[-1])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", default="churn-example", help="registered model name")
    parser.add_argument(
        "--experiment", default="/ml-platform/model-pipeline/training", help="experiment (/team/project/type)"
    )
    parser.add_argument(
        "--features", type=int, default=FEATURES, help=f"features the model sees (1-{FEATURES})"
    )
    parser.add_argument("--alias", default="challenger", help="the new version's alias (default challenger)")
    parser.add_argument("--seed", type=int, default=7, help="the synthetic data's seed (its data version)")
    args = parser.parse_args(argv)
    if not 1 <= args.features <= FEATURES:
        parser.error(f"--features must be between 1 and {FEATURES}")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        parser.error("set MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")

    train_x, val_x, train_y, val_y = load_data(args.seed)
    columns = slice(0, args.features)
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"logistic-{args.features}-features"):
        # The tags `mlflow-stack audit` expects on every run: who, which code, which data.
        mlflow.set_tags(
            {
                "team": "ml-platform",
                "owner": os.environ.get("GITHUB_ACTOR", os.environ.get("USER", "unknown")),
                "git_commit": os.environ.get("GITHUB_SHA", "local"),
                "data_version": f"synthetic-seed-{args.seed}",
            }
        )
        mlflow.log_params({"model": "logistic-regression", "features": args.features, "seed": args.seed})
        model = LogisticModel(fit(train_x[:, columns], train_y), args.features)
        auc = roc_auc(val_y, model.predict(None, val_x))
        mlflow.log_metric(METRIC, auc)
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            registered_model_name=args.model_name,
            # Stated, not inferred: inference loads the model in a subprocess (seconds per run).
            pip_requirements=[f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"],
        )
    version = str(logged.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(args.model_name, args.alias, version)
    print(f"{args.model_name} version {version}: {METRIC}={auc:.4f}, alias {args.alias}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
