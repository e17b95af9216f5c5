"""Criteria on agent metadata for `find(where=...)`. No I/O.

`where` maps a dotted path into `meta` (`"zone"`, `"hw.gpu"`) to either a plain value, meaning
equality, or an object of operators: `{"hw.gpu": {"gte": 2}, "zone": {"in": ["eu", "us"]}}`.
Operators: `eq`, `neq`, `gt`, `lt`, `gte`, `lte`, `in`, `not_in`; several on one path must all
hold. To compare with an object, say so: `{"hw": {"eq": {"gpu": 2}}}`.

Values compare as JSON values: `true` is not `1`; order operators compare two numbers or two
strings and are false for anything else. A missing path satisfies only `neq` and `not_in`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mabeam.core.errors import BadRequestError

__all__ = ["OPERATORS", "Criterion", "compile_where", "matches"]

_MISSING: Final = object()
_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
}
OPERATORS: Final = frozenset({"eq", "neq", "in", "not_in", *_ORDER})
"""The operator names `where` accepts."""


@dataclass(frozen=True, slots=True)
class Criterion:
    """One test on one metadata path."""

    path: tuple[str, ...]
    op: str
    value: Any

    def test(self, meta: Mapping[str, Any]) -> bool:
        """True when `meta` satisfies this criterion."""
        found = _lookup(meta, self.path)
        if found is _MISSING:
            return self.op in ("neq", "not_in")
        if self.op == "eq":
            return _same(found, self.value)
        if self.op == "neq":
            return not _same(found, self.value)
        if self.op == "in":
            return any(_same(found, item) for item in self.value)
        if self.op == "not_in":
            return not any(_same(found, item) for item in self.value)
        return _ordered(found, self.value) and _ORDER[self.op](found, self.value)


def compile_where(where: Mapping[str, Any]) -> tuple[Criterion, ...]:
    """Check a `where` mapping and turn it into criteria; `BadRequestError` if it is malformed."""
    if not isinstance(where, Mapping):
        raise BadRequestError(f"where must be an object of path: criteria, got {where!r}")
    criteria: list[Criterion] = []
    for path, spec in where.items():
        tokens = _split_path(path)
        if isinstance(spec, Mapping) and spec:
            criteria.extend(_criterion(path, tokens, op, value) for op, value in spec.items())
        else:
            criteria.append(Criterion(tokens, "eq", spec))
    return tuple(criteria)


def matches(meta: Mapping[str, Any], criteria: tuple[Criterion, ...]) -> bool:
    """True when `meta` satisfies every criterion."""
    return all(criterion.test(meta) for criterion in criteria)


def _criterion(path: str, tokens: tuple[str, ...], op: object, value: Any) -> Criterion:
    if op not in OPERATORS:
        raise BadRequestError(
            f"where {path!r}: unknown operator {op!r}; use one of {', '.join(sorted(OPERATORS))}"
            " (to compare with an object, write {'eq': {...}})"
        )
    if op in ("in", "not_in") and not isinstance(value, list | tuple | set | frozenset):
        raise BadRequestError(f"where {path!r}: {op} takes a list, got {value!r}")
    return Criterion(tokens, str(op), value)


def _split_path(path: object) -> tuple[str, ...]:
    if not isinstance(path, str) or not path or "" in path.split("."):
        raise BadRequestError(f"where path {path!r} must be dot-separated names, such as 'hw.gpu'")
    return tuple(path.split("."))


def _lookup(meta: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = meta
    for token in path:
        if not isinstance(found, Mapping) or token not in found:
            return _MISSING
        found = found[token]
    return found


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) is not isinstance(right, bool):
        return False
    return bool(left == right)


def _ordered(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return True
    numbers = (int, float)
    return (
        isinstance(left, numbers)
        and isinstance(right, numbers)
        and not isinstance(left, bool)
        and not isinstance(right, bool)
    )
