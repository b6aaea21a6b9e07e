"""The platform's names on the broker (CONTRACT 8): where VoIPbin's outdial-manager
is asked, where it publishes, and how it signs what it sends.

Read from `voipbin/monorepo` (`bin-common-handler/models/outline`,
`pkg/notifyhandler`, `pkg/rabbitmqhandler`); the service answers and publishes
under the same names so that the platform's services can switch to it unchanged.
"""

from __future__ import annotations

# The durable queue the platform's callers publish request envelopes to (default exchange).
REQUEST_QUEUE = "bin-manager.outdial-manager.request"
# A *fanout* exchange despite its name (`TopicCreate` declares it fanout, durable, no
# arguments): declared otherwise, the broker refuses the second declaration.
EVENT_EXCHANGE = "bin-manager.outdial-manager.event"
EVENT_ROUTING_KEY = ""
# webhook-manager's request queue: customer webhooks are handed to it as requests.
WEBHOOK_QUEUE = "bin-manager.webhook-manager.request"
WEBHOOK_URI = "/v1/webhooks"

# `publisher` of events and requests, and `domain` of typed errors.
SERVICE_NAME = "outdial-manager"
ERROR_DATA_TYPE = "voipbin_error"
# The outdial events VoIPbin publishes (none for targets: its notify handler has none).
OUTDIAL_EVENTS = ("outdial_created", "outdial_updated", "outdial_deleted")
