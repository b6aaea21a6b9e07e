"""The HTTP API's answers to reads, kept while nothing is committed to the store.

Dialers and dashboards poll the same few reads. An answer is a function of the
request and the read model, and the read model changes only by a commit; so an
answer kept with the store's commit stamp (`commit_stamp`) is the answer again for
as long as the stamp is unchanged. Every lookup reads the stamp first: a write
answered before the read started has changed it, and the read goes to the store
(CONTRACT 3: a read that starts after a write was answered sees it, whichever
process wrote).

An answer is kept under the stamp read before its read of the store began: a
commit in between changes the stamp, and the next lookup drops it. All of it runs
on the event loop, which serves the requests.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ENTRY_BYTES", "MAX_ANSWER_BYTES", "MAX_BYTES", "AnswerCache", "Key"]

# The answers kept, in all, and the largest kept: a target page of 100 targets is
# 30 to 60 KB.
MAX_BYTES = 32 * 1024 * 1024
MAX_ANSWER_BYTES = 256 * 1024
# What an entry costs besides its answer and its key's texts (Python's objects and
# the dict's slot), counted against MAX_BYTES with them: a client with a token can
# send the same read with a query of its own making every time, and a key of an
# 8 KB query beside an answer of 300 bytes must not go uncounted.
ENTRY_BYTES = 512

# An answer's key: its route, its customer and its request's path and query.
Key = tuple[str, ...]


class AnswerCache:
    """Answers by key (the caller's: its route, its customer and its request),
    valid while `stamp()` is what it was when they were read; a stamp of None
    keeps nothing."""

    def __init__(self, stamp: Callable[[], bytes | None], max_bytes: int = MAX_BYTES):
        self._stamp = stamp
        self._max_bytes = max_bytes
        self._kept_under: bytes | None = None
        self._answers: dict[Key, bytes] = {}
        self._bytes = 0

    def lookup(self, key: Key) -> tuple[bytes | None, bytes | None]:
        """The kept answer of `key` if nothing was committed since it was read, else
        None; and the stamp to `keep` a new answer under, read now, before the
        store is."""
        stamp = self._stamp()
        if stamp != self._kept_under:
            self._answers.clear()
            self._bytes = 0
            self._kept_under = stamp
        if stamp is None:
            return None, None
        return self._answers.get(key), stamp

    def keep(self, key: Key, stamp: bytes | None, answer: bytes) -> None:
        """Keep `answer`, read after `stamp` was (`lookup`), unless a lookup since
        found another stamp (the answer may be older than what it found)."""
        if stamp is None or stamp != self._kept_under or len(answer) > MAX_ANSWER_BYTES:
            return
        previous = self._answers.pop(key, None)
        if previous is not None:
            self._bytes -= _cost(key, previous)
        cost = _cost(key, answer)
        # The oldest go first (dicts keep their order of insertion).
        while self._answers and self._bytes + cost > self._max_bytes:
            oldest = next(iter(self._answers))
            self._bytes -= _cost(oldest, self._answers.pop(oldest))
        self._answers[key] = answer
        self._bytes += cost

    def __len__(self) -> int:
        return len(self._answers)


def _cost(key: Key, answer: bytes) -> int:
    return ENTRY_BYTES + len(answer) + sum(map(len, key))
