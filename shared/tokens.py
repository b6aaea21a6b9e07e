"""JWTs of CONTRACT 5: HS256, claims `customer_id` and `exp`."""

from __future__ import annotations

import time
from uuid import UUID

import jwt

ALGORITHM = "HS256"


def mint(customer_id: UUID, secret: str, *, ttl_seconds: int = 3600) -> str:
    claims = {"customer_id": str(customer_id), "exp": int(time.time()) + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def customer_of(token: str, secret: str) -> UUID:
    """The token's customer; raises jwt.InvalidTokenError (or ValueError) if it is not valid."""
    claims = jwt.decode(
        token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "customer_id"]}
    )
    return UUID(str(claims["customer_id"]))
