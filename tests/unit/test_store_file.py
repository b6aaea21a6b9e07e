"""The SQLite store's file and the JWT secret's are their owner's alone (CONTRACT 7;
docs/reliability.md)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.store import parse_store_url, prepare_store, schema_lock
from shared.config import Settings

ROOT = Path(__file__).parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_file_is_private(tmp_path: Path) -> None:
    store = parse_store_url(f"sqlite:///{tmp_path}/new/outdial.sqlite3")
    prepare_store(store)
    assert mode(store.path) == 0o600


def test_a_store_file_an_earlier_version_left_readable_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = parse_store_url(f"sqlite:///{tmp_path}/outdial.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        file = tmp_path / f"outdial.sqlite3{suffix}"
        file.write_bytes(b"")
        file.chmod(0o644)
    prepare_store(store)
    assert [mode(tmp_path / f"outdial.sqlite3{s}") for s in ("", "-wal", "-shm")] == [0o600] * 3
    assert "made private to its owner" in caplog.text
    caplog.clear()
    prepare_store(store)  # already private: nothing to say
    assert "made private" not in caplog.text


def test_a_jwt_secret_file_open_to_others_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "jwt.secret"
    secret.write_text("s" * 48 + "\n")
    secret.chmod(0o644)
    settings = Settings(var_dir=tmp_path, jwt_secret=None)
    assert settings.existing_secret() == "s" * 48
    assert mode(secret) == 0o600
    assert "the JWT secret file was open to other users" in caplog.text
    caplog.clear()
    # Already private: nothing to say.
    assert Settings(var_dir=tmp_path, jwt_secret=None).secret == "s" * 48
    assert "open to other users" not in caplog.text


def test_processes_starting_on_one_sqlite_store_take_turns(tmp_path: Path) -> None:
    """`schema_lock` on SQLite: a process that wants it while another holds it waits."""
    url = f"sqlite:///{tmp_path}/new/outdial.sqlite3"
    take = (
        "import sys; from services.store import parse_store_url, schema_lock\n"
        f"with schema_lock(parse_store_url({url!r})):\n"
        "    print('in', flush=True)\n"
    )
    with schema_lock(parse_store_url(url)):
        other = subprocess.Popen(
            [sys.executable, "-c", take], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            other.communicate(timeout=1)
            raise AssertionError("the other process took the lock while it was held")
        except subprocess.TimeoutExpired:
            pass
    out, _ = other.communicate(timeout=30)
    assert (out, other.returncode) == ("in\n", 0)
    assert mode(tmp_path / "new" / "outdial.sqlite3-lock") == 0o600
