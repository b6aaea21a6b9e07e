"""The write side's eventsourcing `Application`: the event store, configured only
from the service's own store URL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import Environment

from services.command.transcoder import OrjsonTranscoder
from services.store import Store, parse_store_url, prepare_store, schema_lock


class OutdialApplication(Application[UUID]):
    name = "outdial"

    def __init__(self, store: Store):
        self.store = store
        with schema_lock(store):
            prepare_store(store)
            super().__init__(env=store.env)

    @classmethod
    def from_url(cls, database_url: str) -> OutdialApplication:
        return cls(parse_store_url(database_url))

    def construct_transcoder(self) -> OrjsonTranscoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def close(self) -> None:
        close_recorder = getattr(self.recorder, "close", None)
        if close_recorder is not None:
            close_recorder()  # the SQLite recorder's checkpoint thread
        super().close()

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only the service configures the store: eventsourcing's own environment
        # variables (PERSISTENCE_MODULE, COMPRESSOR_TOPIC, ...) set by hand in the
        # process environment must not silently change what is stored or where.
        return Environment(name, {**type(self).env, **(env or {})})
