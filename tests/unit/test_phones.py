"""Which numbers are in the United States: +1 alone also covers Canada and the Caribbean."""

from __future__ import annotations

import pytest

from shared.phones import is_us_number


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+13125550123", True),  # Chicago
        ("+12065550100", True),  # Seattle
        ("+14165550123", False),  # Toronto, Canada
        ("+18765550123", False),  # Jamaica
        ("+442071838750", False),  # London
        ("+1312555012", False),  # too short for any +1 number
        ("13125550123", False),  # not E.164: no +
        ("", False),
    ],
)
def test_is_us_number(number: str, expected: bool) -> None:
    assert is_us_number(number) is expected
