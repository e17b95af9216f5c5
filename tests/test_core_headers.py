"""`HeaderBlock`: headers with their NATS header block built once."""

import pytest

from mabeam.core.errors import BadRequestError
from mabeam.core.headers import HeaderBlock


def test_a_header_block_is_the_read_only_mapping_of_its_headers_and_their_wire_block() -> None:
    headers = HeaderBlock({"Mabeam-Calls": " [1, 2] ", "Nats-TTL": "5s"})
    assert dict(headers) == {"Mabeam-Calls": "[1, 2]", "Nats-TTL": "5s"}  # values trimmed
    assert len(headers) == 2 and headers["Nats-TTL"] == "5s" and "Mabeam-Calls" in headers
    assert headers.block == b"NATS/1.0\r\nMabeam-Calls: [1, 2]\r\nNats-TTL: 5s\r\n\r\n"
    assert HeaderBlock({}).block == b"NATS/1.0\r\n\r\n"
    with pytest.raises(TypeError):
        headers["Nats-TTL"] = "1s"  # type: ignore[index]


@pytest.mark.parametrize("name", ["", "two words", " padded", "colon:", "é"])
def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(BadRequestError, match="is not a token"):
        HeaderBlock({name: "x"})


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "a\rb"])
def test_a_header_value_with_a_line_break_is_refused_rather_than_rewritten(value: str) -> None:
    with pytest.raises(BadRequestError, match="holds a line break"):
        HeaderBlock({"Mabeam-Calls": value})
