"""Every error code of the service, with its HTTP status and its VoIPbin status and
reason (`ErrorCode`); and the errors of a command's reply (CONTRACT 3) as one
exception class per `error.code`, for the typed client.

A caller of the typed client catches what it can act on: `NoAvailableTarget`
means "the list is done for now", `TargetNotProgressing` means "someone else
already finished it", and so on. Codes this module does not know yet still
raise the class of their status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # shared.resources uses PlatformStatus: imported where it is needed
    from shared.resources import ErrorDetail


class PlatformStatus(StrEnum):
    """VoIPbin's error statuses (`bin-common-handler/models/errors`, `cerrors.Status`)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PAYMENT_REQUIRED = "PAYMENT_REQUIRED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"

    @property
    def status_code(self) -> int:
        """VoIPbin's `HTTPStatusFor`: the envelope reply's `status_code` for this status."""
        return _PLATFORM_STATUS_CODES[self]


_PLATFORM_STATUS_CODES = {
    PlatformStatus.INVALID_ARGUMENT: 400,
    PlatformStatus.UNAUTHENTICATED: 401,
    PlatformStatus.PAYMENT_REQUIRED: 402,
    PlatformStatus.PERMISSION_DENIED: 403,
    PlatformStatus.NOT_FOUND: 404,
    PlatformStatus.ALREADY_EXISTS: 409,
    PlatformStatus.FAILED_PRECONDITION: 409,
    PlatformStatus.RESOURCE_EXHAUSTED: 429,
    PlatformStatus.UNAVAILABLE: 503,
    PlatformStatus.INTERNAL: 500,
}


class ErrorCode(StrEnum):
    """Every error code the service answers, by whichever door: the `error.code` of a
    command's reply (CONTRACT 3), of the HTTP API (CONTRACT 5), and what the
    platform's envelope (CONTRACT 8) answers as a VoIPbin `status` and `reason`."""

    # A command's reply (CONTRACT 3); the HTTP API and the envelope pass them on.
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
    # The HTTP API's own (CONTRACT 5).
    INVALID_ID = "invalid_id"
    INVALID_JSON = "invalid_json"
    INVALID_HEADER = "invalid_header"
    INVALID_PAGE_SIZE = "invalid_page_size"
    INVALID_PAGE_TOKEN = "invalid_page_token"
    INVALID_LIMIT = "invalid_limit"
    INVALID_MAX_TRY_COUNT_0 = "invalid_max_try_count_0"
    INVALID_MAX_TRY_COUNT_1 = "invalid_max_try_count_1"
    INVALID_MAX_TRY_COUNT_2 = "invalid_max_try_count_2"
    INVALID_MAX_TRY_COUNT_3 = "invalid_max_try_count_3"
    INVALID_MAX_TRY_COUNT_4 = "invalid_max_try_count_4"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TIMEOUT = "body_timeout"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    POSITION_NOT_REACHED = "position_not_reached"
    COMMAND_TIMEOUT = "command_timeout"
    HTTP_ERROR = "http_error"  # any other refusal of aiohttp's, with its own status
    # The platform's envelope's own (CONTRACT 8).
    INVALID_REQUEST = "invalid_request"
    INVALID_FILTER = "invalid_filter"

    @property
    def status(self) -> int:
        """The HTTP status, and the `status_code` of a command's reply, for this code."""
        return _MEANINGS[self].status

    @property
    def platform_status(self) -> PlatformStatus:
        """VoIPbin's `status` for this code; the envelope answers its `status_code`."""
        return _MEANINGS[self].platform_status

    @property
    def reason(self) -> str:
        """VoIPbin's `reason`: its own where it has one (`OUTDIAL_NOT_FOUND`,
        `OUTDIAL_TARGET_NOT_FOUND`), else in its style, `<RESOURCE>_<CONDITION>`."""
        return _MEANINGS[self].reason

    @property
    def platform_message(self) -> str | None:
        """VoIPbin's own words for this error, where it has them."""
        return _MEANINGS[self].message


@dataclass(frozen=True)
class _Meaning:
    status: int
    platform_status: PlatformStatus
    reason: str
    message: str | None = None


_400 = PlatformStatus.INVALID_ARGUMENT
_404 = PlatformStatus.NOT_FOUND
_CONFLICT = PlatformStatus.FAILED_PRECONDITION
_EXISTS = PlatformStatus.ALREADY_EXISTS

_MEANINGS: dict[ErrorCode, _Meaning] = {
    ErrorCode.INVALID_COMMAND: _Meaning(400, _400, "INVALID_COMMAND"),
    # VoIPbin has no status for 413: the caller's argument is what is wrong.
    ErrorCode.COMMAND_TOO_LARGE: _Meaning(413, _400, "COMMAND_TOO_LARGE"),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: _Meaning(409, _CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
    ErrorCode.OUTDIAL_NOT_FOUND: _Meaning(
        404, _404, "OUTDIAL_NOT_FOUND", "The outdial was not found."
    ),
    ErrorCode.TARGET_NOT_FOUND: _Meaning(
        404, _404, "OUTDIAL_TARGET_NOT_FOUND", "The outdial target was not found."
    ),
    ErrorCode.NO_AVAILABLE_TARGET: _Meaning(404, _404, "OUTDIAL_TARGET_NOT_AVAILABLE"),
    ErrorCode.OUTDIAL_EXISTS: _Meaning(409, _EXISTS, "OUTDIAL_ALREADY_EXISTS"),
    ErrorCode.TARGET_EXISTS: _Meaning(409, _EXISTS, "OUTDIAL_TARGET_ALREADY_EXISTS"),
    ErrorCode.TARGET_PROGRESSING: _Meaning(409, _CONFLICT, "OUTDIAL_TARGET_PROGRESSING"),
    ErrorCode.TARGET_DONE: _Meaning(409, _CONFLICT, "OUTDIAL_TARGET_DONE"),
    ErrorCode.DESTINATION_ABSENT: _Meaning(409, _CONFLICT, "OUTDIAL_TARGET_DESTINATION_ABSENT"),
    ErrorCode.TARGET_NOT_PROGRESSING: _Meaning(409, _CONFLICT, "OUTDIAL_TARGET_NOT_PROGRESSING"),
    ErrorCode.INTERNAL_ERROR: _Meaning(500, PlatformStatus.INTERNAL, "INTERNAL_ERROR"),
    ErrorCode.INVALID_ID: _Meaning(400, _400, "INVALID_ID"),
    ErrorCode.INVALID_JSON: _Meaning(400, _400, "INVALID_JSON_BODY"),
    ErrorCode.INVALID_HEADER: _Meaning(400, _400, "INVALID_HEADER"),
    ErrorCode.INVALID_PAGE_SIZE: _Meaning(400, _400, "INVALID_PAGE_SIZE"),
    ErrorCode.INVALID_PAGE_TOKEN: _Meaning(400, _400, "INVALID_PAGE_TOKEN"),
    ErrorCode.INVALID_LIMIT: _Meaning(400, _400, "INVALID_LIMIT"),
    # The envelope's callers name these `try_count_N`.
    ErrorCode.INVALID_MAX_TRY_COUNT_0: _Meaning(400, _400, "INVALID_TRY_COUNT_0"),
    ErrorCode.INVALID_MAX_TRY_COUNT_1: _Meaning(400, _400, "INVALID_TRY_COUNT_1"),
    ErrorCode.INVALID_MAX_TRY_COUNT_2: _Meaning(400, _400, "INVALID_TRY_COUNT_2"),
    ErrorCode.INVALID_MAX_TRY_COUNT_3: _Meaning(400, _400, "INVALID_TRY_COUNT_3"),
    ErrorCode.INVALID_MAX_TRY_COUNT_4: _Meaning(400, _400, "INVALID_TRY_COUNT_4"),
    ErrorCode.UNAUTHORIZED: _Meaning(
        401, PlatformStatus.UNAUTHENTICATED, "AUTHENTICATION_REQUIRED"
    ),
    ErrorCode.NOT_FOUND: _Meaning(404, _404, "ROUTE_NOT_FOUND"),
    ErrorCode.METHOD_NOT_ALLOWED: _Meaning(405, _404, "METHOD_NOT_ALLOWED"),
    ErrorCode.BODY_TIMEOUT: _Meaning(408, _400, "BODY_TIMEOUT"),
    ErrorCode.BODY_TOO_LARGE: _Meaning(413, _400, "BODY_TOO_LARGE"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: _Meaning(415, _400, "UNSUPPORTED_MEDIA_TYPE"),
    ErrorCode.POSITION_NOT_REACHED: _Meaning(
        504, PlatformStatus.UNAVAILABLE, "POSITION_NOT_REACHED"
    ),
    ErrorCode.COMMAND_TIMEOUT: _Meaning(504, PlatformStatus.UNAVAILABLE, "COMMAND_TIMEOUT"),
    ErrorCode.HTTP_ERROR: _Meaning(400, _400, "HTTP_ERROR"),
    ErrorCode.INVALID_REQUEST: _Meaning(400, _400, "INVALID_REQUEST"),
    ErrorCode.INVALID_FILTER: _Meaning(400, _400, "INVALID_FILTER"),
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
    from shared.resources import ErrorDetail

    status = int(reply.get("status_code", 500))
    error = reply.get("error") or {}
    code = str(error.get("code", "internal_error"))
    cls = BY_CODE.get(code) or BY_STATUS.get(status, OutdialError)
    details = [ErrorDetail.model_validate(d) for d in error.get("details", [])]
    return cls(code, str(error.get("message", "")), details, status)
