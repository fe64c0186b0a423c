"""The rules Core's gRPC listener holds Agent streams to, without a network: credentials, token buckets,
log-field clipping, telling a message's kind and account from its bytes, and the [split] keys."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc_guard import (
    ACCOUNT_OFFLINE,
    FROM_ACCOUNT,
    QUOTES,
    STATE_SNAPSHOT,
    Bucket,
    Credentials,
    clip,
    peek,
)
from echo.domain import messages as m
from echo.domain.config import ConfigError, config_from_dict


def test_each_listed_agent_needs_its_own_token_and_the_shared_one_admits_only_the_unlisted() -> None:
    both = Credentials("shared-secret", {"agent-a": "secret-of-a", "agent-b": "secret-of-b"})
    assert both.check("agent-a", "secret-of-a") is None
    assert both.check("agent-a", "secret-of-b") == "invalid agent token"  # another Agent's token
    assert (
        both.check("agent-a", "shared-secret") == "invalid agent token"
    )  # the shared one: not for a listed id
    assert both.check("agent-z", "shared-secret") is None
    assert both.check("agent-z", "secret-of-a") == "invalid agent token"
    listed = Credentials("", {"agent-a": "secret-of-a"})
    assert listed.check("agent-z", "") == "agent id not in split.agent_tokens"
    assert Credentials().check("anyone", "") is None and not Credentials().required


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = Bucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # one more per tenth of a second
    assert sum(bucket.take(5.0) for _ in range(10)) == 3  # a long pause refills the burst, no more


def test_a_peer_chosen_log_field_is_clipped_and_escaped() -> None:
    assert clip("agent-a") == "agent-a"
    assert clip("x" * 1_000_000) == "x" * 64 + "...(+999936)"
    assert clip("a\nb\x1b[31m") == "a\\nb\\x1b[31m"


def _quotes(account: str) -> bytes:
    q = m.Quotes([m.Quote("XAUUSD", 2000.0, 2000.5, 1)])
    return conv.agent_message(m.FromAccount(account, q, int(time.time() * 1000))).SerializeToString()


def test_the_kind_and_account_of_a_message_are_told_from_its_bytes() -> None:
    assert peek(_quotes("51001")) == (FROM_ACCOUNT, QUOTES, "51001")
    snapshot = m.StateSnapshot(10_000.0, 10_000.0, 0.0, 10_000.0, "USD", 100)
    raw = conv.agent_message(m.FromAccount("9001", snapshot, 1)).SerializeToString()
    assert peek(raw) == (FROM_ACCOUNT, STATE_SNAPSHOT, "9001")
    offline = conv.agent_message(m.AccountOffline("agent-a", "51001", 1)).SerializeToString()
    assert peek(offline)[0] == ACCOUNT_OFFLINE


@given(st.binary(max_size=512))
def test_any_bytes_are_peeked_without_raising(raw: bytes) -> None:
    payload, kind, account = peek(raw)
    assert isinstance(payload, int) and isinstance(kind, int) and isinstance(account, str)


@given(st.text(min_size=1, max_size=40), st.binary(max_size=64))
def test_a_valid_message_with_anything_after_it_still_names_its_account(account: str, tail: bytes) -> None:
    payload, kind, seen = peek(_quotes(account) + tail)
    assert payload == FROM_ACCOUNT and kind == QUOTES and seen == account


@pytest.mark.parametrize(
    ("split", "says"),
    [
        ({"agent_tokens": {"agent-a": "short"}}, "16..256"),
        ({"agent_tokens": {"": "a-long-enough-secret"}}, "1..64"),
        ({"agent_tokens": {"agent-a": 5}}, "must map agent id -> token"),
        ({"agent_tokens": "agent-a"}, "must map agent id -> token"),
        ({"max_hello_bytes": 10}, "split.max_hello_bytes must be 256.."),
        ({"write_timeout_ms": 0}, "split.write_timeout_ms must be 100.."),
        ({"send_queue": 1}, "split.send_queue must be 16.."),
    ],
)
def test_a_bad_split_key_is_one_clear_line(split: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        config_from_dict({"split": split})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_split_keys_are_read() -> None:
    config = config_from_dict(
        {
            "split": {
                "agent_tokens": {"agent-a": "a-long-enough-secret"},
                "control_per_s": 20,
                "send_queue": 64,
            }
        }
    )
    assert config.split.agent_tokens == {"agent-a": "a-long-enough-secret"}
    assert (config.split.control_per_s, config.split.send_queue) == (20, 64)


def test_keepalive_lets_a_busy_link_answer_late_but_notices_a_dead_one() -> None:
    """A ping may wait behind a burst: the link is dropped only after five heartbeats without an answer
    (at least 2 s), never after one late answer."""
    from echo.adapters.transport.grpc import keepalive

    default = keepalive(2000)
    assert default._keepalive_time == 2.0 and default._keepalive_timeout == 10.0
    fast = keepalive(200)
    assert fast._keepalive_time == 0.2 and fast._keepalive_timeout == 2.0
