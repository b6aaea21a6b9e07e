"""Destination addresses (CONTRACT 1): one pydantic model, validated by its type.

A destination is where a target can be reached: every type of VoIPbin's address
model (`bin-common-handler/models/address`). A phone number (`tel`, and
`whatsapp`, a WhatsApp phone number), a SIP URI, an e-mail address; the UUID of
an agent, conference, AI or AI team; or what the platform's own services dial
for an extension, a LINE user, a web session or a webchat, which is no UUID
(a LINE user id is LINE's own): any text of 1 to 1,024 characters. The check of
`target` depends on `type`, so it lives in one model validator rather than in a
union of near-identical models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, region_code_for_country_code
from phonenumbers.phonenumberutil import _set_italian_leading_zeros_for_phone_number
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationInfo, field_validator

AddressType = Literal[
    "tel",
    "sip",
    "email",
    "agent",
    "conference",
    "extension",
    "line",
    "web_session",
    "ai",
    "ai_team",
    "webchat",
    "whatsapp",
]
ADDRESS_TYPES: tuple[str, ...] = get_args(AddressType)
PHONE_ADDRESS_TYPES = frozenset({"tel", "whatsapp"})
UUID_ADDRESS_TYPES = frozenset({"agent", "conference", "ai", "ai_team"})
# Checked only as text: non-empty and at most 1,024 characters (`Address.target`).
TEXT_ADDRESS_TYPES = frozenset({"extension", "line", "web_session", "webchat"})

ShortText = Annotated[str, StringConstraints(max_length=1024)]

# E.164 is at most 15 digits after "+", and never starts with 0. phonenumbers alone
# would forgive spaces, dashes and extensions; the contract wants the strict form.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# user@domain, with an optional port; no spaces, no second "@", no scheme.
SIP = re.compile(
    r"[A-Za-z0-9._~!$&'()*+,;=%-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(?::([0-9]{1,5}))?"
)
# The canonical form only: UUID() would also take braces, "urn:uuid:" and bare hex.
UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_phone_number(target: str) -> None:
    """Raise ValueError unless `target` (E.164) is a possible phone number, as
    `phonenumbers.parse(target, None)` and `is_possible_number` judge it."""
    try:
        number = _e164_number(target) or phonenumbers.parse(target, None)
    except phonenumbers.NumberParseException as e:
        raise ValueError(f"not a phone number: {e}") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number")


def _e164_number(target: str) -> phonenumbers.PhoneNumber | None:
    """What `phonenumbers.parse` makes of a string that matched `E164`, in a sixth
    of its time, or None where only `parse` itself can tell (a national prefix
    that it might strip, a country code it does not know, too few digits).

    `parse` works for any text in any format; an E.164 string needs only its
    steps for "+" and digits: the country code is the first 1 to 3 digits that
    are one, the rest is the national number, unless the region's national
    prefix leads it (then `parse` decides). Every AddTarget of a phone number
    pays this: `parse` was most of a command's validation.
    tests/unit/test_addresses.py checks it against `parse` on every country code."""
    digits = target[1:]
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if len(national) < 2:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, region_code_for_country_code(country_code)
    )
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    if prefix and re.match(prefix, national):
        return None
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    _set_italian_leading_zeros_for_phone_number(national, number)
    return number


def check_target(address_type: str, target: str) -> None:
    """Raise ValueError unless `target` is a valid address of `address_type`."""
    if address_type in PHONE_ADDRESS_TYPES:
        if not E164.fullmatch(target):
            raise ValueError(f"a {address_type} target must be E.164: '+' then digits only")
        check_phone_number(target)
    elif address_type == "sip":
        match = SIP.fullmatch(target)
        if not match:
            raise ValueError("a sip target must be user@domain")
        if match[2] is not None and not 0 < int(match[2]) < 65536:
            raise ValueError("a sip port must be 1 to 65535")
    elif address_type == "email":
        try:
            validate_email(target, check_deliverability=False)
        except EmailNotValidError as e:
            raise ValueError(f"not an e-mail address: {e}") from None
    elif address_type in UUID_ADDRESS_TYPES and not UUID_TEXT.fullmatch(target):
        article = "an" if address_type[0] in "aeiou" else "a"
        raise ValueError(f"{article} {address_type} target must be a UUID")


class Address(BaseModel):
    """One destination of a target, in the documented shape."""

    model_config = ConfigDict(frozen=True, strict=True)

    type: AddressType
    target: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    target_name: ShortText = ""
    name: ShortText = ""
    detail: ShortText = ""

    @field_validator("target")
    @classmethod
    def _target_fits_type(cls, target: str, info: ValidationInfo) -> str:
        # `type` is validated first (field order); when it is invalid, that is the error.
        if "type" in info.data:
            check_target(info.data["type"], target)
        return target
