"""mlflow-stack: a production MLflow tracking server and model registry on AWS.

The table of contents: read and validate the stack's settings (nothing is created if they are
wrong), build the platform, export its outputs. Each step lives in `infra/`.
"""

from infra.platform import build_platform, export_outputs
from infra.settings import load_settings

settings = load_settings()
platform = build_platform(settings)
export_outputs(platform)
