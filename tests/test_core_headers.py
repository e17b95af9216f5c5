"""`HeaderBlock`: headers with their NATS header block built once; `read_token_headers`: a
block read back as nats-py reads it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from mabeam.core.errors import BadRequestError
from mabeam.core.headers import HeaderBlock, read_token_headers

_TOKEN_CHARACTERS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


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


def _as_nats_py_reads(block: bytes) -> dict[str, str]:
    return NatsClient._parse_header_lines(block[len(b"NATS/1.0\r\n") :])


@given(
    st.dictionaries(
        st.text(_TOKEN_CHARACTERS, min_size=1, max_size=20),
        st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])),
        max_size=6,
    )
)
def test_a_block_of_token_names_reads_back_as_nats_py_reads_it(headers: dict[str, str]) -> None:
    block = HeaderBlock(headers).block
    assert read_token_headers(block) == _as_nats_py_reads(block)


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0\r\nA:b\r\n\r\n",
        b"NATS/1.0\r\n  A :  b c \r\nno colon\r\n\r\nB: x:y\r\n\r\n",
        b"NATS/1.0\r\nA: \xff\xfe\r\nA: again\r\n\r\n",
        b"NATS/1.0\r\n\r\n",
    ],
)
def test_odd_but_token_blocks_read_as_nats_py_reads_them(block: bytes) -> None:
    assert read_token_headers(block) == _as_nats_py_reads(block)


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0 503\r\n\r\n",
        b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\n\r\n",
        b"NATS/1.0\r\nTwo words: x\r\n\r\n",
        b"NATS/1.0\r\n\xc3\xa9: x\r\n\r\n",
    ],
)
def test_a_status_or_a_name_that_is_not_a_token_is_left_to_nats_py(block: bytes) -> None:
    assert read_token_headers(block) is None
