import hypothesis.strategies as st
import pytest
from hypothesis import given

from mabeam.core import names
from mabeam.core.errors import BadRequestError
from mabeam.core.names import (
    Subjects,
    validate_call_id,
    validate_id,
    validate_pattern,
    validate_prefix,
    validate_runner_id,
    validate_topic,
    virtual_agent_id,
    virtual_form,
)


@pytest.mark.parametrize("value", ["a", "agent-1", "A_b-9", "x" * 128])
def test_valid_ids_are_accepted(value: str) -> None:
    assert validate_id(value) == value


@pytest.mark.parametrize("value", ["", "a.b", "a b", "a*", "a>", "é", "x" * 129, 5, None])
def test_invalid_ids_are_refused_with_the_rule(value: object) -> None:
    with pytest.raises(BadRequestError, match="agent id"):
        validate_id(value, "agent id")


@pytest.mark.parametrize("value", ["mabeam", "team.prod", "a-b_c"])
def test_valid_prefixes(value: str) -> None:
    assert validate_prefix(value) == value


@pytest.mark.parametrize("value", ["", "a..b", "a.*", "a b", ".a", "a."])
def test_invalid_prefixes(value: str) -> None:
    with pytest.raises(BadRequestError):
        validate_prefix(value)


@pytest.mark.parametrize("value", ["orders", "orders.eu.created", "sensors.t-1.temperature"])
def test_topics(value: str) -> None:
    assert validate_topic(value) == value


@pytest.mark.parametrize("value", ["", "a..b", "a.*", "a.>", "a b", "a.b*", 3])
def test_topics_refuse_wildcards_and_empty_tokens(value: object) -> None:
    with pytest.raises(BadRequestError):
        validate_topic(value)


@pytest.mark.parametrize("value", ["orders.*.created", ">", "a.>", "*.*", "a.b"])
def test_patterns(value: str) -> None:
    assert validate_pattern(value) == value


@pytest.mark.parametrize("value", ["a.>.b", "a*", "a.b>", "", "a..b", "a b"])
def test_patterns_refuse_misplaced_wildcards(value: str) -> None:
    with pytest.raises(BadRequestError):
        validate_pattern(value)


def test_subjects_follow_the_protocol() -> None:
    subjects = Subjects("team.prod")
    assert subjects.agent("d1", "increment") == "team.prod.agent.d1.increment"
    assert subjects.event("orders.eu") == "team.prod.events.orders.eu"
    assert subjects.topic_of("team.prod.events.orders.eu") == "orders.eu"
    assert subjects.spawn == "team.prod.ctl.spawn"
    assert subjects.spawn_type("Thermostat") == "team.prod.ctl.spawn.Thermostat"
    assert subjects.runners_queue == "team.prod.runners"
    assert subjects.runners == "team.prod.ctl.runners"
    assert subjects.virtual("demo", "k1", "increment") == "team.prod.virtual.demo.k1.increment"
    assert subjects.virtual_type("demo") == "team.prod.virtual.demo.*.*"
    assert subjects.runner_control("r1", "drain") == "team.prod.ctl.r1.drain"
    assert subjects.bucket("agents") == "team_prod_agents"
    assert subjects.events_stream == "team_prod_EVENTS"


def test_a_runner_may_not_be_named_spawn() -> None:
    assert validate_runner_id("runner-1") == "runner-1"
    with pytest.raises(BadRequestError, match="reserved"):  # P.ctl.spawn.drain is a spawn subject
        validate_runner_id("spawn")
    with pytest.raises(BadRequestError, match="runner id"):
        validate_runner_id("bad id")


def test_subjects_refuse_a_bad_prefix() -> None:
    with pytest.raises(BadRequestError):
        Subjects("bad prefix")


def test_topic_of_refuses_foreign_subjects() -> None:
    with pytest.raises(BadRequestError):
        Subjects("p").topic_of("q.events.x")


def test_virtual_agent_ids_name_type_and_key_without_ambiguity() -> None:
    assert virtual_agent_id("demo", "k1") == "v_4_demo_k1"
    assert virtual_agent_id("a_b", "c") != virtual_agent_id("a", "b_c")
    long = virtual_agent_id("t" * 100, "k" * 100)
    assert long.startswith("v_h_") and len(long) == 44
    assert validate_id(long) == long
    with pytest.raises(BadRequestError, match="virtual agent key"):
        virtual_agent_id("demo", "a.b")
    assert virtual_form("v_4_demo_k1") and virtual_form(long)
    assert not any(map(virtual_form, ["v_x", "v_4", "vv_4_demo_k1", "x_v_4_demo_k1"]))


_NAME = st.from_regex(r"^[A-Za-z0-9_-]{1,128}$", fullmatch=True)


@given(_NAME, _NAME, _NAME, _NAME)
def test_two_type_and_key_pairs_share_an_id_only_when_equal(
    type_a: str, key_a: str, type_b: str, key_b: str
) -> None:
    same = virtual_agent_id(type_a, key_a) == virtual_agent_id(type_b, key_b)
    assert same == ((type_a, key_a) == (type_b, key_b))
    validate_id(virtual_agent_id(type_a, key_a))


def test_remembered_ids_stay_valid_and_bounded() -> None:
    """A name that passed once passes again from memory; the memory never grows past its
    bound, and a str subclass (whose equality could lie) is checked by the pattern anew."""

    class Sneaky(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    assert validate_id("repeated-name") == "repeated-name"
    assert validate_id("repeated-name") == "repeated-name"
    assert "repeated-name" in names._valid_ids
    with pytest.raises(BadRequestError, match="must match"):
        validate_id(Sneaky("not valid!"), "agent id")
    for index in range(names._VALID_IDS_AT_MOST + 10):
        validate_id(f"many-{index}")
    assert len(names._valid_ids) <= names._VALID_IDS_AT_MOST
    with pytest.raises(BadRequestError, match="must match"):
        validate_id("still bad", "agent id")


def test_call_ids_follow_the_id_rule_and_are_not_remembered() -> None:
    assert validate_call_id("c4f1e2-17") == "c4f1e2-17"
    assert "c4f1e2-17" not in names._valid_ids  # one per call: remembering them is waste
    for bad in ("", "a b", "x" * 129, 7):
        with pytest.raises(BadRequestError, match="call id"):
            validate_call_id(bad)
