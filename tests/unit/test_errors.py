"""One error-code enum: each code's HTTP status, and VoIPbin's status and reason."""

from __future__ import annotations

from shared.errors import BY_CODE, ErrorCode, PlatformStatus
from tests.go_decoding import STATUS_CODES


def test_platform_statuses_are_voipbins_with_its_http_status_for() -> None:
    # bin-common-handler/models/errors: status.go and rpc.go's HTTPStatusFor.
    assert {s.value: s.status_code for s in PlatformStatus} == STATUS_CODES


def test_every_code_means_something_everywhere() -> None:
    reasons = [code.reason for code in ErrorCode]
    assert len(set(reasons)) == len(reasons)
    for code in ErrorCode:
        assert 400 <= code.status < 600
        assert code.reason.isupper() and " " not in code.reason
        assert isinstance(code.platform_status, PlatformStatus)


def test_voipbins_own_reasons_and_words() -> None:
    assert ErrorCode.OUTDIAL_NOT_FOUND.platform_status is PlatformStatus.NOT_FOUND
    assert ErrorCode.OUTDIAL_NOT_FOUND.reason == "OUTDIAL_NOT_FOUND"
    assert ErrorCode.OUTDIAL_NOT_FOUND.platform_message == "The outdial was not found."
    assert ErrorCode.TARGET_NOT_FOUND.reason == "OUTDIAL_TARGET_NOT_FOUND"
    assert ErrorCode.TARGET_NOT_FOUND.platform_message == "The outdial target was not found."


def test_statuses_agree_where_voipbin_has_one() -> None:
    """The HTTP status of a code is its VoIPbin status's, but for the ones VoIPbin
    has no status for (413, 405, 408, 415, 504: said in docs/envelope.md)."""
    own = {405, 408, 413, 415, 504}
    for code in ErrorCode:
        if code.status not in own:
            assert code.platform_status.status_code == code.status, code
    assert ErrorCode.TARGET_NOT_PROGRESSING.platform_status is PlatformStatus.FAILED_PRECONDITION
    assert ErrorCode.OUTDIAL_EXISTS.platform_status is PlatformStatus.ALREADY_EXISTS
    assert ErrorCode.COMMAND_TOO_LARGE.platform_status is PlatformStatus.INVALID_ARGUMENT


def test_the_typed_client_knows_every_code_of_a_reply() -> None:
    replies = {
        "invalid_command",
        "command_too_large",
        "idempotency_key_reused",
        "outdial_not_found",
        "target_not_found",
        "no_available_target",
        "outdial_exists",
        "target_exists",
        "target_progressing",
        "target_done",
        "destination_absent",
        "target_not_progressing",
        "internal_error",
    }
    assert replies <= {c.value for c in ErrorCode}
    assert set(BY_CODE) == replies
