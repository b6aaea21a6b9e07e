"""Names on the broker (CONTRACT 3 and 4), in one place for both sides and clients."""

COMMAND_QUEUE = "outdial.commands"
DEAD_LETTER_QUEUE = "outdial.commands.dead"
EVENT_EXCHANGE = "outdial.events"
JSON = "application/json"
# The routing keys of CONTRACT 4: one per kind of event.
EVENT_TYPES = (
    "outdial_created",
    "outdial_updated",
    "outdial_deleted",
    "outdialtarget_created",
    "outdialtarget_updated",
    "outdialtarget_deleted",
)
