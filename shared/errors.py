"""The errors of a command's reply (CONTRACT 3), one exception class per `error.code`.

A caller of the typed client catches what it can act on: `NoAvailableTarget`
means "the list is done for now", `TargetNotProgressing` means "someone else
already finished it", and so on. Codes this module does not know yet still
raise the class of their status code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.resources import ErrorDetail


class OutdialError(Exception):
    """A command the service refused or failed: its status, code, message, details."""

    status_code: ClassVar[int] = 500

    def __init__(
        self, code: str, message: str, details: list[ErrorDetail] | None = None, status: int = 0
    ):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or []
        self.status = status or self.status_code


class InvalidCommand(OutdialError):
    status_code = 400


class NotFound(OutdialError):
    """The resource is unknown, deleted, or another customer's (never a hint which)."""

    status_code = 404


class OutdialNotFound(NotFound):
    pass


class TargetNotFound(NotFound):
    pass


class NoAvailableTarget(NotFound):
    pass


class Conflict(OutdialError):
    status_code = 409


class OutdialExists(Conflict):
    pass


class TargetExists(Conflict):
    pass


class TargetProgressing(Conflict):
    pass


class TargetDone(Conflict):
    pass


class DestinationAbsent(Conflict):
    pass


class TargetNotProgressing(Conflict):
    pass


class InternalError(OutdialError):
    status_code = 500


BY_CODE: dict[str, type[OutdialError]] = {
    "invalid_command": InvalidCommand,
    "outdial_not_found": OutdialNotFound,
    "target_not_found": TargetNotFound,
    "no_available_target": NoAvailableTarget,
    "outdial_exists": OutdialExists,
    "target_exists": TargetExists,
    "target_progressing": TargetProgressing,
    "target_done": TargetDone,
    "destination_absent": DestinationAbsent,
    "target_not_progressing": TargetNotProgressing,
    "internal_error": InternalError,
}
BY_STATUS: dict[int, type[OutdialError]] = {
    400: InvalidCommand,
    404: NotFound,
    409: Conflict,
    500: InternalError,
}


def error_of(reply: dict[str, Any]) -> OutdialError:
    """The exception a non-200 reply stands for."""
    status = int(reply.get("status_code", 500))
    error = reply.get("error") or {}
    code = str(error.get("code", "internal_error"))
    cls = BY_CODE.get(code) or BY_STATUS.get(status, OutdialError)
    details = [ErrorDetail.model_validate(d) for d in error.get("details", [])]
    return cls(code, str(error.get("message", "")), details, status)
