"""`stream_position` reads what nats-py's `Msg.metadata` reads, from both reply forms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from mabeam.core.errors import BadRequestError
from mabeam.core.messages import stream_position

counts = st.integers(min_value=0, max_value=2**63)


def _delivery(reply: str) -> Msg:
    return Msg(None, subject="KV.p_agents.a1", reply=reply)  # type: ignore[arg-type]


@given(sequence=counts, pending=counts, delivered=counts, form=st.sampled_from(["v1", "v2", "v2-"]))
def test_position_is_what_nats_py_reads(
    sequence: int, pending: int, delivered: int, form: str
) -> None:
    fields = f"{delivered}.{sequence}.7.1733630000123456789.{pending}"
    reply = {
        "v1": f"$JS.ACK.KV_p_agents.ord1.{fields}",
        "v2": f"$JS.ACK._.ACCOUNTHASH.KV_p_agents.ord1.{fields}.r4nd",
        "v2-": f"$JS.ACK.hub.ACCOUNTHASH.KV_p_agents.ord1.{fields}",
    }[form]
    msg = _delivery(reply)
    assert stream_position(msg) == (msg.metadata.sequence.stream, msg.metadata.num_pending)
    assert stream_position(msg) == (sequence, pending)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "_INBOX.abc.1",
        "$JS.ACK.S.C.1.2.3",  # too short
        "$JS.ACK.S.C.1.2.3.4.5.6",  # 10 tokens: neither form
        "$JS.ACK.S.C.1.x.3.4.5",  # not a number
        "$JS.ACK.S.C.1.2.3.4.-5",
        "$JS.ACK.S.C.1.2.3.4.\u00b2",
        "$JS.NAK.S.C.1.2.3.4.5",
    ],
)
def test_a_reply_that_is_not_a_delivery_is_refused(reply: str) -> None:
    with pytest.raises(BadRequestError, match="not the reply subject of a JetStream delivery"):
        stream_position(_delivery(reply))
