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

from collections.abc import Callable, Hashable

__all__ = ["MAX_ANSWER_BYTES", "MAX_BYTES", "AnswerCache"]

# The answers kept, in all, and the largest kept: a target page of 100 targets is
# about 30 KB.
MAX_BYTES = 32 * 1024 * 1024
MAX_ANSWER_BYTES = 256 * 1024


class AnswerCache:
    """Answers by key (the caller's: its route, its customer and its request),
    valid while `stamp()` is what it was when they were read; a stamp of None
    keeps nothing."""

    def __init__(self, stamp: Callable[[], bytes | None], max_bytes: int = MAX_BYTES):
        self._stamp = stamp
        self._max_bytes = max_bytes
        self._kept_under: bytes | None = None
        self._answers: dict[Hashable, bytes] = {}
        self._bytes = 0

    def lookup(self, key: Hashable) -> tuple[bytes | None, bytes | None]:
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

    def keep(self, key: Hashable, stamp: bytes | None, answer: bytes) -> None:
        """Keep `answer`, read after `stamp` was (`lookup`), unless a lookup since
        found another stamp (the answer may be older than what it found)."""
        if stamp is None or stamp != self._kept_under or len(answer) > MAX_ANSWER_BYTES:
            return
        previous = self._answers.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        # The oldest go first (dicts keep their order of insertion).
        while self._answers and self._bytes + len(answer) > self._max_bytes:
            self._bytes -= len(self._answers.pop(next(iter(self._answers))))
        self._answers[key] = answer
        self._bytes += len(answer)

    def __len__(self) -> int:
        return len(self._answers)
