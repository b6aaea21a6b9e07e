"""Destination validation of CONTRACT 1: every accepted and rejected form, for every
address type of VoIPbin's address model."""

from __future__ import annotations

from random import Random

import phonenumbers
import pytest
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumber
from pydantic import ValidationError

from shared.addresses import ADDRESS_TYPES, E164, Address, _e164_number, check_phone_number

UUID_TYPES = ["agent", "conference", "ai", "ai_team"]
# What the platform's services dial for these is no UUID (a LINE user id is LINE's).
TEXT_TYPES = ["extension", "line", "web_session", "webchat"]
PHONE_TYPES = ["tel", "whatsapp"]
A_UUID = "6a2d3b0e-6f0e-4c1e-9d5b-1f0b8f9c2a11"


def test_every_type_of_the_platform_is_known() -> None:
    # bin-common-handler/models/address: the 12 types besides "" (none).
    assert sorted(ADDRESS_TYPES) == sorted([*PHONE_TYPES, "sip", "email", *UUID_TYPES, *TEXT_TYPES])


@pytest.mark.parametrize(
    ("type_", "target"),
    [
        ("tel", "+15559876543"),  # the tutorial's own fictional number
        ("tel", "+15551234567"),
        ("tel", "+821012345678"),
        ("tel", "+442079460958"),
        ("whatsapp", "+821012345678"),
        ("sip", "alice@example.com"),
        ("sip", "1001@pbx.example.com:5060"),
        ("email", "someone@example.com"),
        *[(t, A_UUID) for t in UUID_TYPES],
        *[(t, A_UUID.upper()) for t in UUID_TYPES],
        *[(t, target) for t in TEXT_TYPES for target in ("2000", "U4af4980629", A_UUID, "x")],
        ("line", "U" + "f" * 1023),  # up to 1,024 characters
    ],
)
def test_accepts(type_: str, target: str) -> None:
    address = Address.model_validate({"type": type_, "target": target})
    assert address.target == target
    assert (address.target_name, address.name, address.detail) == ("", "", "")


@pytest.mark.parametrize(
    ("type_", "target"),
    [
        ("tel", "+1 555 987 6543"),  # spaces
        ("tel", "15559876543"),  # no "+"
        ("tel", "+15559876543x"),  # trailing garbage
        ("tel", "+1-555-987-6543"),  # dashes
        ("tel", "+15559876543;ext=12"),  # extension
        ("tel", "+0155598765"),  # no country code starts with 0
        ("tel", "+1"),  # too short to be possible
        ("tel", "+1555"),  # not a possible number for its country
        ("tel", "+1234567890123456"),  # over 15 digits
        ("tel", "tel:+15559876543"),  # a URI, not a number
        ("tel", "+１５５５９８７６５４３"),  # noqa: RUF001 - full-width digits
        ("tel", ""),
        ("sip", "alice"),  # no domain
        ("sip", "@example.com"),  # no user
        ("sip", "alice@"),
        ("sip", "alice@@example.com"),
        ("sip", "alice@exa mple.com"),
        ("sip", "sip:alice@example.com"),  # a scheme is not user@domain
        ("email", "not-an-email"),
        ("email", "a@b"),  # no dot in the domain
        ("email", "two@@example.com"),
        ("sip", "alice@example.com:99999"),  # no such port
        ("sip", "alice@example.com:0"),
        ("whatsapp", "821012345678"),  # as tel: "+" then digits
        ("whatsapp", "+1555"),
        *[(t, "not-a-uuid") for t in UUID_TYPES],
        *[(t, "{" + A_UUID + "}") for t in UUID_TYPES],
        *[(t, "urn:uuid:" + A_UUID) for t in UUID_TYPES],
        *[(t, A_UUID.replace("-", "")) for t in UUID_TYPES],
        *[(t, "+15559876543") for t in UUID_TYPES],
        *[(t, "") for t in TEXT_TYPES],
        *[(t, "x" * 1025) for t in TEXT_TYPES],
    ],
)
def test_rejects(type_: str, target: str) -> None:
    with pytest.raises(ValidationError) as e:
        Address.model_validate({"type": type_, "target": target})
    assert [err["loc"] for err in e.value.errors()] == [("target",)]


@pytest.mark.parametrize(
    ("type_", "message"),
    [
        ("agent", "an agent target must be a UUID"),
        ("ai", "an ai target must be a UUID"),
        ("ai_team", "an ai_team target must be a UUID"),
        ("conference", "a conference target must be a UUID"),
        ("whatsapp", "a whatsapp target must be E.164: '+' then digits only"),
    ],
)
def test_says_what_a_target_must_be(type_: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        Address.model_validate({"type": type_, "target": "nope"})
    assert message in str(e.value)


@pytest.mark.parametrize("type_", ["fax", "TEL", "", None, 5, "none", "web-session"])
def test_rejects_unknown_types(type_: object) -> None:
    with pytest.raises(ValidationError) as e:
        Address.model_validate({"type": type_, "target": "+15559876543"})
    assert ("type",) in [err["loc"] for err in e.value.errors()]


def test_rejects_non_string_target() -> None:
    with pytest.raises(ValidationError):
        Address.model_validate({"type": "tel", "target": 15559876543})


def test_rejects_overlong_fields() -> None:
    with pytest.raises(ValidationError):
        Address.model_validate({"type": "tel", "target": "+15559876543", "name": "x" * 1025})
    Address.model_validate({"type": "tel", "target": "+15559876543", "name": "x" * 1024})


def _parsed(target: str) -> tuple[str, PhoneNumber | None]:
    """phonenumbers' own verdict: what `parse` makes of it, and whether it is possible."""
    try:
        number = phonenumbers.parse(target, None)
    except phonenumbers.NumberParseException as e:
        return f"refused: {e.error_type}", None
    return f"possible: {phonenumbers.is_possible_number(number)}", number


def _checked(target: str) -> str:
    try:
        check_phone_number(target)
    except ValueError:
        return "refused"
    return "accepted"


def test_the_e164_shortcut_judges_as_phonenumbers_parse_does() -> None:
    """For every country code and every length E.164 allows, random national
    numbers (and every first two digits, where national prefixes hide): the
    shortcut makes the very number `parse` makes, or leaves it to `parse`; the
    check accepts exactly what parse + is_possible_number accept."""
    random = Random(164)
    shortcut = 0
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        room = 15 - len(str(code))
        nationals = ["".join(random.choices("0123456789", k=n)) for n in range(room + 1)] * 8
        nationals += [
            f"{i:02d}" + "".join(random.choices("0123456789", k=room - 2)) for i in range(100)
        ]
        for national in nationals:
            target = f"+{code}{national}"
            if not E164.fullmatch(target):
                continue
            verdict, number = _parsed(target)
            fast = _e164_number(target)
            if fast is not None:
                shortcut += 1
                assert fast == number, target
            assert _checked(target) == ("accepted" if verdict == "possible: True" else "refused"), (
                target,
                verdict,
            )
    assert shortcut > 30_000  # the shortcut does take most numbers
