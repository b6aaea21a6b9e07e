"""JWTs of CONTRACT 5: HS256, claims `customer_id` and `exp`."""

from __future__ import annotations

import functools
import time
from uuid import UUID

import jwt

ALGORITHM = "HS256"


def mint(customer_id: UUID, secret: str, *, ttl_seconds: int = 3600) -> str:
    claims = {"customer_id": str(customer_id), "exp": int(time.time()) + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def customer_of(token: str, secret: str) -> UUID:
    """The token's customer; raises jwt.InvalidTokenError (or ValueError) if it is not valid."""
    return UUID(customer_id_of(token, secret))


def customer_id_of(token: str, secret: str) -> str:
    """The token's customer as the canonical text of its UUID (lower case); raises
    jwt.InvalidTokenError (or ValueError) if the token is not valid."""
    customer, expires = _verified(token, secret)
    if expires <= time.time():
        raise jwt.ExpiredSignatureError("Signature has expired")
    return customer


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> tuple[str, int]:
    # A client sends the same token with every request: its signature is checked
    # once, its expiry every time (by the caller), for as long as it is among the
    # 4,096 tokens used last. Invalid tokens raise, and lru_cache keeps no exceptions.
    claims = jwt.decode(
        token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "customer_id"]}
    )
    # int, as PyJWT read it: float() overflows on an `exp` of 400 digits.
    return str(UUID(str(claims["customer_id"]))), int(claims["exp"])
