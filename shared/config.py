"""The service's configuration: every `OUTDIAL_*` variable, read in one place.

pydantic-settings reads the environment, so a typo'd value (a port that is not a
number) fails at start with the variable's name rather than deep in a component.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.private_files import keep_private

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "sqlite:///./var/outdial.sqlite3"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# HS256 with a shorter key is guessable; PyJWT 2.8 even accepts an empty one.
MIN_SECRET_BYTES = 32


class SettingError(Exception):
    """A setting that cannot work: `outdial` says which and why, in one line."""

    def __init__(self, setting: str, cause: str):
        super().__init__(f"{setting}: {cause}")
        self.setting = setting
        self.cause = cause


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTDIAL_", frozen=True)

    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = DEFAULT_DATABASE_URL
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    jwt_secret: str | None = None
    # Where the JWT secret file is kept (the default SQLite store is
    # OUTDIAL_DATABASE_URL's, ./var/outdial.sqlite3, whatever this says).
    var_dir: Path = Path("./var")
    # Unacknowledged commands the broker may hand one consumer at a time.
    prefetch: Annotated[int, Field(ge=1, le=65535)] = 64  # AMQP's prefetch count: 16 bits
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (any case), not {value!r}")
        return value

    @property
    def secret_file(self) -> Path:
        return self.var_dir / "jwt.secret"

    @cached_property
    def secret(self) -> str:
        """OUTDIAL_JWT_SECRET, or the one kept in var/, made at random on first use."""
        if self.jwt_secret:  # empty, as a compose file's unset `${VAR}` gives: none
            return _long_enough(self.jwt_secret, "OUTDIAL_JWT_SECRET")
        return _stored_secret(self.secret_file, create=True)

    def existing_secret(self) -> str:
        """The secret the service uses, never a new one (for `outdial token`: a token
        signed with a secret the service does not have would only ever be refused)."""
        if self.jwt_secret:
            return _long_enough(self.jwt_secret, "OUTDIAL_JWT_SECRET")
        return _stored_secret(self.secret_file, create=False)


def _long_enough(secret: str, where: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingError(where, f"shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _stored_secret(path: Path, *, create: bool) -> str:
    if not path.exists():
        if not create:
            raise SettingError(
                "OUTDIAL_JWT_SECRET",
                f"not set, and there is no {path} here: run `outdial token` in the "
                "directory where `outdial run` runs (it makes that file on first start), "
                "or set OUTDIAL_JWT_SECRET",
            )
        _make_secret(path)
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise SettingError("OUTDIAL_VAR_DIR", f"cannot read {path}: {e.strerror}") from None
    keep_private(path, "the JWT secret file")  # whoever reads it can sign any token
    return _long_enough(secret, f"OUTDIAL_JWT_SECRET (kept in {path})")


def _make_secret(path: Path) -> None:
    """Write a new secret where none is, atomically: it is written whole to a file
    of its own first, then linked into place, so a process starting at the same
    moment reads either no file or the whole secret, never an empty one, and a
    crash leaves no half-written secret behind. Of two processes racing, the first
    link wins and both use its secret."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, draft = tempfile.mkstemp(prefix=".jwt.secret.", dir=path.parent)  # mode 0600
    except OSError as e:
        raise SettingError(
            "OUTDIAL_VAR_DIR", f"cannot write the JWT secret in {path.parent}: {e.strerror}"
        ) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        os.unlink(draft)
