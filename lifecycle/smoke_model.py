"""The smoke check's model, logged as MLflow "models from code".

`mlflow.pyfunc.log_model(python_model=<this file>)` stores this source file as the model, so
loading `models:/<name>@champion` runs it again instead of unpickling an object: nothing about the
smoke check's own process ends up in the artifact store. Never imported by the kit itself.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

SLOPE = 2.0
INTERCEPT = 1.0


class AffineModel(PythonModel):
    """y = 2x + 1: trivial, deterministic, and easy to assert on after a round trip through S3."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[float]:
        return [SLOPE * float(x) + INTERCEPT for x in model_input["x"]]


mlflow.models.set_model(AffineModel())
