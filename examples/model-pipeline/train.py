"""Train a small classifier, log it to MLflow and register it as the challenger.

Step 1 of the model pipeline (.github/workflows/model-pipeline.yml): train -> validate -> promote.
The server comes from MLflow's own client variables, exactly what `mlflow-stack models` reads:
MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD and, for a private CA,
MLFLOW_TRACKING_SERVER_CERT_PATH.

The data is synthetic (scikit-learn's make_classification, fixed seed) so the example runs
anywhere; swap `load_data` for your own. `--features` is the one knob: how many of the dataset's
features the model sees, so a run can be made better or worse on purpose.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

METRIC = "val_auc"


def load_data(seed: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    features, labels = make_classification(
        n_samples=2000, n_features=20, n_informative=8, n_redundant=0, flip_y=0.05, random_state=seed
    )
    return train_test_split(features, labels, test_size=0.3, random_state=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", default="churn-example", help="registered model name")
    parser.add_argument(
        "--experiment", default="/ml-platform/model-pipeline/training", help="experiment (/team/project/type)"
    )
    parser.add_argument("--features", type=int, default=20, help="features the model sees (1-20)")
    parser.add_argument("--alias", default="challenger", help="the new version's alias (default challenger)")
    parser.add_argument("--seed", type=int, default=7, help="the synthetic data's seed (its data version)")
    args = parser.parse_args(argv)
    if not 1 <= args.features <= 20:
        parser.error("--features must be between 1 and 20")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        parser.error("set MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")

    import mlflow
    import sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    train_x, val_x, train_y, val_y = load_data(args.seed)
    columns = slice(0, args.features)
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"logreg-{args.features}-features"):
        # The tags `mlflow-stack audit` expects on every run: who, which code, which data.
        mlflow.set_tags(
            {
                "team": "ml-platform",
                "owner": os.environ.get("GITHUB_ACTOR", os.environ.get("USER", "unknown")),
                "git_commit": os.environ.get("GITHUB_SHA", "local"),
                "data_version": f"synthetic-seed-{args.seed}",
            }
        )
        mlflow.log_params({"model": "LogisticRegression", "features": args.features, "seed": args.seed})
        model = LogisticRegression(max_iter=500).fit(train_x[:, columns], train_y)
        auc = float(roc_auc_score(val_y, model.predict_proba(val_x[:, columns])[:, 1]))
        mlflow.log_metric(METRIC, auc)
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=args.model_name,
            # Stated, not inferred: inference imports the model in a subprocess (seconds per run).
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )
    version = str(logged.registered_model_version)
    MlflowClient().set_registered_model_alias(args.model_name, args.alias, version)
    print(f"{args.model_name} version {version}: {METRIC}={auc:.4f}, alias {args.alias}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
