"""The SQLite store's file is its owner's alone (CONTRACT 7; docs/reliability.md)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.store import parse_store_url, prepare_store


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
