"""Moved: the HTTP API is `services.gateway.http`.

This module only re-exports what `tests/reliability` imports from here, while
those tests are being ported elsewhere; delete it once they import from
`services.gateway.http`.
"""

from services.gateway.http import (
    BASE,
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    MAX_AVAILABLE,
    MAX_BODY,
    MAX_PAGE_SIZE,
    OPEN_PATHS,
    Services,
    make_app,
)

__all__ = [
    "BASE",
    "BODY_TIMEOUT_SECONDS",
    "HEADER_TIMEOUT_SECONDS",
    "MAX_AVAILABLE",
    "MAX_BODY",
    "MAX_PAGE_SIZE",
    "OPEN_PATHS",
    "Services",
    "make_app",
]
