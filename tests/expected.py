"""What the contract says the service answers, written once for every test."""

from __future__ import annotations

import re

TEL = {"type": "tel", "target": "+15559876543"}
NEVER = "9999-01-01 00:00:00.000000"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")

# CONTRACT 1, in its order: as the HTTP API answers them.
OUTDIAL_KEYS = [
    "id",
    "campaign_id",
    "name",
    "detail",
    "data",
    "tm_create",
    "tm_update",
    "tm_delete",
]
TARGET_KEYS = [
    "id",
    "outdial_id",
    "name",
    "detail",
    "data",
    "status",
    *[f"destination_{i}" for i in range(5)],
    *[f"try_count_{i}" for i in range(5)],
    "tm_create",
    "tm_update",
    "tm_delete",
]
# Bus replies and events add the customer (CONTRACT 3 and 4).
BUS_OUTDIAL_KEYS = [*OUTDIAL_KEYS, "customer_id"]
BUS_TARGET_KEYS = [*TARGET_KEYS, "customer_id"]
