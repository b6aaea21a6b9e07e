"""Names on the broker (CONTRACT 3 and 4), in one place for both sides and clients."""

COMMAND_QUEUE = "outdial.commands"
DEAD_LETTER_QUEUE = "outdial.commands.dead"
EVENT_EXCHANGE = "outdial.events"
JSON = "application/json"
