import inspect

import nats.errors
import nats.js.errors
import pytest

from mabeam.core import errors
from mabeam.core.connection import map_nats_error, nats_errors
from mabeam.core.errors import (
    ConflictError,
    ConnectError,
    DeadlineError,
    MabeamError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    error_for_code,
)


def test_every_error_is_in_one_tree_and_says_when_it_is_raised() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, Exception)
    ]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, MabeamError)
        assert (cls.__doc__ or "").startswith("Raised when"), cls


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, "BadRequestError"),
        (404, "UnknownActionError"),
        (429, "OverloadedError"),
        (503, "UnavailableError"),
        (999, "MabeamError"),
    ],
)
def test_wire_codes_map_back_to_classes(code: int, cls: str) -> None:
    error = error_for_code(code, "m")
    assert type(error).__name__ == cls
    assert error.message == "m"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (nats.errors.NoRespondersError(), UnavailableError),
        (nats.errors.TimeoutError(), DeadlineError),
        (TimeoutError(), DeadlineError),
        (nats.errors.MaxPayloadError(), TooLargeError),
        (nats.errors.NoServersError(), ConnectError),
        (nats.errors.ConnectionClosedError(), ConnectError),
        (
            nats.js.errors.KeyWrongLastSequenceError(description="wrong last sequence: 3"),
            ConflictError,
        ),
        (nats.js.errors.KeyNotFoundError(), NotFoundError),
        (
            nats.js.errors.APIError(code=400, err_code=10071, description="wrong last sequence"),
            ConflictError,
        ),
        (nats.js.errors.APIError(code=503, description="no leader"), UnavailableError),
        (
            nats.js.errors.APIError(code=400, err_code=10058, description="stream name in use"),
            ConflictError,
        ),
    ],
)
def test_nats_errors_are_mapped_at_the_boundary(
    raised: Exception, expected: type[MabeamError]
) -> None:
    assert isinstance(map_nats_error(raised), expected)
    with pytest.raises(expected) as caught, nats_errors():
        raise raised
    assert caught.value.__cause__ is raised
