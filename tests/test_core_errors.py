import inspect

import nats.errors
import nats.js.errors
import pytest

from mabeam.core import errors
from mabeam.core.connection import map_nats_error, nats_errors
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    ConnectError,
    DeadlineError,
    MabeamError,
    NoRespondersError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    UnknownActionError,
    UnknownTypeError,
    error_for_code,
)
from mabeam.core.replies import ERROR_CODE_HEADER, error_of, error_reply, result_of


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
    ("code", "slug", "cls"),
    [
        (404, "unknown_type", UnknownTypeError),
        (404, "unknown_action", UnknownActionError),
        (404, "something_else", UnknownActionError),
        (404, "not_found", NotFoundError),
        (400, "bad_config", errors.ConfigError),
        (408, "reply_timeout", errors.ReplyTimeoutError),
        (503, "no_responders", NoRespondersError),
        (500, "internal", MabeamError),
        (500, "not_found", errors.ActionFailedError),
        (400, "unknown_type", BadRequestError),
    ],
)
def test_a_slug_tells_apart_errors_that_share_a_code(
    code: int, slug: str, cls: type[MabeamError]
) -> None:
    assert type(error_for_code(code, "m", slug)) is cls


def test_a_reply_decodes_to_the_class_of_its_slug() -> None:
    headers, body = error_reply(UnknownTypeError("no runner hosts agent type 'x'"))
    assert headers[ERROR_CODE_HEADER] == "404"
    error = error_of(headers, body)
    assert isinstance(error, UnknownTypeError) and error.message.startswith("no runner hosts")
    with pytest.raises(UnknownTypeError):
        result_of(headers, body)
    foreign = {ERROR_CODE_HEADER: "404"}
    assert type(error_of(foreign, b"not json")) is UnknownActionError
    assert error_of(None, b"{}") is None


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (nats.errors.NoRespondersError(), NoRespondersError),
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
        (
            nats.js.errors.APIError(code=400, err_code=10164, description="wrong last sequence"),
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
