"""The MLflow internals server/artifact_access.py relies on, pinned against the installed MLflow,
and the stack setting that chooses the mode."""

from __future__ import annotations

import pytest

from server import artifact_access, contract


def test_every_presigned_route_is_refused_by_name() -> None:
    from mlflow.server import app

    presigned_rules = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if any(part in rule.rule for part in ("/mpu/", "/presigned", "presigned-"))
    }
    # Every route MLflow has that can hand out an S3 URL is in the refused set, and nothing else.
    assert presigned_rules == artifact_access.PRESIGNED_URL_ENDPOINTS


def test_client_fallback_message_and_capability_keys_match_mlflow() -> None:
    from mlflow.exceptions import _UnsupportedMultipartUploadException
    from mlflow.utils import server_info

    assert artifact_access.UNSUPPORTED_MULTIPART == _UnsupportedMultipartUploadException.MESSAGE
    assert artifact_access.REFUSAL.startswith(_UnsupportedMultipartUploadException.MESSAGE)
    assert artifact_access.CAPABILITY_KEYS == (
        server_info.SERVER_INFO_MULTIPART_UPLOADS_ENABLED,
        server_info.SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED,
    )


def test_install_refuses_an_unknown_mode() -> None:
    from mlflow.server import app

    with pytest.raises(ValueError, match="'proxied' or 'presigned'"):
        artifact_access.install(app, "direct")


def test_modes_are_the_same_everywhere() -> None:
    from typing import get_args

    from infra.settings.models import ArtifactSettings

    field = ArtifactSettings.model_fields["client_access"]
    assert get_args(field.annotation) == contract.ARTIFACT_CLIENT_ACCESS_MODES
    assert field.default == contract.ARTIFACT_CLIENT_ACCESS.default == "proxied"
