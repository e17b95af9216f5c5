"""NATS headers with their header block built once, when they are made.

nats-py builds the header block of a message key by key at every publish: it strips each name,
checks it against the token grammar, strips each value and replaces its line breaks, encodes
both. For a snapshot write, whose remembered calls travel in a header of about 700 bytes, that
is about 3 µs a write (the newline translation of the long value alone 2 µs). A `HeaderBlock` is
a read-only mapping of headers holding the block as NATS writes it (`NATS/1.0`, a `name: value`
line each, an empty line): `Connection.publish` hands it to the socket as it is
(`nats_privates.Client`), with the same bytes nats-py would write for the same headers. Where
nats-py would quietly rewrite a header (a name with spaces round it, a line break in a value),
a `HeaderBlock` refuses it with `BadRequestError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final

from mabeam.core.errors import BadRequestError

__all__ = ["HeaderBlock", "read_token_headers"]

_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name: an HTTP token (RFC 9110), the grammar nats-py checks names against."""
_NAME_BYTES: Final = re.compile(_NAME.pattern.encode())
_PLAIN_FIRST_LINE: Final = b"NATS/1.0\r\n"
"""The first line of a header block without a status (a status follows `NATS/1.0` on it)."""
_checked: set[str] = set()  # names seen valid already: a handful, each checked once
_CHECKED_AT_MOST: Final = 1024


class HeaderBlock(Mapping[str, str]):
    """Read-only headers and `block`, their NATS header block (module docstring)."""

    __slots__ = ("_headers", "block")

    def __init__(self, headers: Mapping[str, str]) -> None:
        lines = ["NATS/1.0\r\n"]
        kept: dict[str, str] = {}
        for name, value in headers.items():
            if name not in _checked:
                if not _NAME.fullmatch(name):
                    raise BadRequestError(f"header name {name!r} is not a token")
                if len(_checked) < _CHECKED_AT_MOST:
                    _checked.add(name)
            if "\r" in value or "\n" in value:
                raise BadRequestError(f"header {name!r} holds a line break")
            value = value.strip()
            kept[name] = value
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self._headers = kept
        self.block: bytes = "".join(lines).encode()
        """The header block on the wire."""

    def __getitem__(self, name: str) -> str:
        return self._headers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return f"HeaderBlock({self._headers!r})"


def read_token_headers(block: bytes) -> dict[str, str] | None:
    """The headers of a block without a status line, read as nats-py reads them, when every
    name in it is a token; None for any other block (a status, a name that is not a token:
    nats-py's own parser reads those). nats-py strips, checks and decodes each name in a Python
    generator; here a name is checked once (a regular expression) and then known: a call id's
    block in 1.1 µs against 1.5 µs checking it each time (a microbenchmark)."""
    if not block.startswith(_PLAIN_FIRST_LINE):
        return None
    headers: dict[str, str] = {}
    for line in block[len(_PLAIN_FIRST_LINE) :].split(b"\r\n"):
        raw, colon, value = line.partition(b":")
        if not colon:
            continue  # nats-py skips a line without a colon (and the empty last ones)
        name = _known_names.get(raw)
        if name is None:
            name = _token_name(raw)
            if name is None:
                return None
        headers[name] = value.strip().decode("utf-8", "replace")
    return headers


_known_names: dict[bytes, str] = {}
"""Header names as they came (spaces round them included) → the name nats-py reads: a handful."""


def _token_name(raw: bytes) -> str | None:
    """`raw` stripped and decoded, remembered, when it is a token; None otherwise."""
    stripped = raw.strip()
    if not _NAME_BYTES.fullmatch(stripped):
        return None
    name = stripped.decode()
    if len(_known_names) < _CHECKED_AT_MOST:
        _known_names[raw] = name
    return name
