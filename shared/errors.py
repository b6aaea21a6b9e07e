"""The errors of a command's reply (CONTRACT 3), one exception class per `error.code`.

A caller of the typed client catches what it can act on: `NoAvailableTarget`
means "the list is done for now", `TargetNotProgressing` means "someone else
already finished it", and so on. Codes this module does not know yet still
raise the class of their status code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from shared.resources import ErrorDetail


class ErrorCode(StrEnum):
    """Every `error.code` of a command's reply (CONTRACT 3)."""

    INVALID_COMMAND = "invalid_command"
    COMMAND_TOO_LARGE = "command_too_large"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    OUTDIAL_NOT_FOUND = "outdial_not_found"
    TARGET_NOT_FOUND = "target_not_found"
    NO_AVAILABLE_TARGET = "no_available_target"
    OUTDIAL_EXISTS = "outdial_exists"
    TARGET_EXISTS = "target_exists"
    TARGET_PROGRESSING = "target_progressing"
    TARGET_DONE = "target_done"
    DESTINATION_ABSENT = "destination_absent"
    TARGET_NOT_PROGRESSING = "target_not_progressing"
    INTERNAL_ERROR = "internal_error"

    @property
    def status(self) -> int:
        """The reply's `status_code` (and the HTTP status) for this code."""
        return _STATUS[self]


_STATUS = {
    ErrorCode.INVALID_COMMAND: 400,
    ErrorCode.COMMAND_TOO_LARGE: 413,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.OUTDIAL_NOT_FOUND: 404,
    ErrorCode.TARGET_NOT_FOUND: 404,
    ErrorCode.NO_AVAILABLE_TARGET: 404,
    ErrorCode.OUTDIAL_EXISTS: 409,
    ErrorCode.TARGET_EXISTS: 409,
    ErrorCode.TARGET_PROGRESSING: 409,
    ErrorCode.TARGET_DONE: 409,
    ErrorCode.DESTINATION_ABSENT: 409,
    ErrorCode.TARGET_NOT_PROGRESSING: 409,
    ErrorCode.INTERNAL_ERROR: 500,
}


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


class CommandTooLarge(OutdialError):
    status_code = 413


class IdempotencyKeyReused(Conflict):
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
    "command_too_large": CommandTooLarge,
    "idempotency_key_reused": IdempotencyKeyReused,
}
BY_STATUS: dict[int, type[OutdialError]] = {
    400: InvalidCommand,
    404: NotFound,
    409: Conflict,
    413: CommandTooLarge,
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
