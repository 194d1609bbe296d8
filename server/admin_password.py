"""The stack's admin secret is the source of truth for the basic-auth admin's password.

MLflow uses the configured admin password only to *create* the admin user; once the user exists
it is ignored, so rotating the secret would change nothing and the old password would stay valid.
The kit applies the secret on every start, under the migration lock: if the stored hash does not
match it, the password is reset to it (and the user made admin again if someone demoted it).
A password changed through MLflow's API is therefore replaced at the next deploy; rotate it by
changing the secret (docs/upgrading.md, "Rotating the admin password").
"""

from __future__ import annotations

import logging
from typing import Any

_logger = logging.getLogger("mlflow_stack.server")


def apply_admin_secret(store: Any, username: str, password: str) -> list[str]:
    """Make `username` an admin whose password is `password`; returns what changed (no values).

    `store` is MLflow's basic-auth SqlAlchemyStore. One hash check (~0.1 s of CPU) when nothing
    changed."""
    changes: list[str] = []
    if not store.authenticate_user(username, password, use_primary=True):
        store.update_user(username, password=password)
        changes.append("password reset to the stack's secret (the previous password no longer works)")
    if not store.get_user(username).is_admin:
        store.update_user(username, is_admin=True)
        changes.append("admin rights restored")
    for change in changes:
        _logger.info("admin user %r: %s", username, change)
    return changes
