"""The service's configuration: every `OUTDIAL_*` variable, read in one place.

pydantic-settings reads the environment, so a typo'd value (a port that is not a
number) fails at start with the variable's name rather than deep in a component.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "sqlite:///./var/outdial.sqlite3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTDIAL_", frozen=True)

    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = DEFAULT_DATABASE_URL
    http_port: int = 8080
    jwt_secret: str | None = None
    # Where the embedded default keeps its files (the SQLite store, the JWT secret).
    var_dir: Path = Path("./var")
    # Unacknowledged commands the broker may hand one consumer at a time.
    prefetch: int = 64
    log_level: str = "INFO"

    @cached_property
    def secret(self) -> str:
        """OUTDIAL_JWT_SECRET, or a random one made on first use and kept in var/."""
        if self.jwt_secret:
            return self.jwt_secret
        return _stored_secret(self.var_dir / "jwt.secret")


def _stored_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once agree on one secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        secret = secrets.token_urlsafe(48)
        f.write(secret + "\n")
    return secret
