"""Moved: the platform's envelope is `services.gateway.envelope`, its queue's name
`shared.platform.REQUEST_QUEUE`.

This module only re-exports what `tests/reliability` imports from here, while
those tests are being ported elsewhere; delete it once they import the name
from `shared.platform`.
"""

from shared.platform import REQUEST_QUEUE

__all__ = ["REQUEST_QUEUE"]
