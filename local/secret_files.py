"""The local stack's generated secrets: one 0600 file each, in a 0700 directory.

Replicas receive only the file paths (`<NAME>_FILE`), so no secret value is ever in a process's
environment or command line. Generated passwords always contain URL-special characters, so every
local stack exercises the quoting path that real-world passwords need.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# The characters that break a naively built `postgresql://user:password@host/db` URI.
URL_SPECIAL = "@:/%#?"


def generate_password(length: int = 24) -> str:
    body = secrets.token_urlsafe(length)[:length]
    # Spread the special characters through the password, not just at the end.
    chars = list(body)
    for ch in URL_SPECIAL:
        chars.insert(secrets.randbelow(len(chars) + 1), ch)
    return "".join(chars)


def write_secret(path: Path, value: str) -> None:
    """Create or replace a secret file atomically with mode 0600 from the start."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class SecretFiles:
    directory: Path

    @property
    def admin_password(self) -> Path:
        return self.directory / "admin_password"

    @property
    def db_password(self) -> Path:
        return self.directory / "db_password"

    @property
    def flask_secret_key(self) -> Path:
        return self.directory / "flask_secret_key"

    @property
    def crypto_kek_passphrase(self) -> Path:
        """MLflow's AI-gateway secrets are encrypted under a key derived from it."""
        return self.directory / "crypto_kek_passphrase"

    @property
    def webhook_encryption_key(self) -> Path:
        """The Fernet key MLflow encrypts webhook secrets with."""
        return self.directory / "webhook_encryption_key"

    @property
    def postgres_superuser_password(self) -> Path:
        """Only the stack itself uses it (to create the app role); replicas never see it."""
        return self.directory / "postgres_superuser_password"

    def ensure(self) -> None:
        """Generate whichever secret is missing; never replace one that exists (the database and
        the auth store already hold the old values)."""
        private_dir(self.directory)
        generators = {
            self.admin_password: generate_password,
            self.db_password: generate_password,
            self.flask_secret_key: lambda: secrets.token_hex(32),
            self.crypto_kek_passphrase: lambda: secrets.token_urlsafe(32),
            # What cryptography's Fernet.generate_key() returns: 32 random bytes, url-safe base64.
            self.webhook_encryption_key: lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            self.postgres_superuser_password: generate_password,
        }
        for path, generate in generators.items():
            if not path.exists():
                write_secret(path, generate())
            os.chmod(path, 0o600)
