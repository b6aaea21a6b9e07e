"""Files that hold every customer's data or the key to it, kept to their owner."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger("outdial")


def keep_private(file: Path, what: str) -> None:
    """`file` made private to its owner if others may read it (left so by an earlier
    version, copied with `cp`, made by hand), with a line in the log naming it as
    `what`; nothing when it is private already or missing."""
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            file.chmod(mode & 0o700)
            log.warning(
                f"{what} was open to other users: made private to its owner",
                extra={"fields": {"path": str(file), "was": oct(mode), "now": oct(mode & 0o700)}},
            )
    except FileNotFoundError:
        return
    except PermissionError:  # not ours to change: it serves as it is
        log.warning(
            f"{what} is open to other users and cannot be made private",
            extra={"fields": {"path": str(file)}},
        )
