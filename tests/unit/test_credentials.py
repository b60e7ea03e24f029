"""Worker credentials: each worker's token and gateway secret, and what they allow."""

from __future__ import annotations

from runpod_flash.platform.credentials import Credentials, bearer


def test_each_worker_gets_its_own_token_and_its_endpoints_secret() -> None:
    credentials = Credentials()
    first = credentials.issue("w1", "ep", live=False, peers=frozenset())
    second = credentials.issue("w2", "ep", live=False, peers=frozenset())
    other = credentials.issue("w3", "other", live=False, peers=frozenset())
    assert len({first.token, second.token, first.gateway_secret}) == 3
    assert first.gateway_secret == second.gateway_secret == credentials.gateway_secret("ep")
    assert other.gateway_secret != first.gateway_secret
    credentials.forget_endpoint("ep")
    assert credentials.gateway_secret("ep") != first.gateway_secret
    assert credentials.for_token(first.token) == first
    assert credentials.for_worker("w2") == second
    credentials.revoke("w1")
    assert credentials.for_token(first.token) is None and len(credentials) == 2
    assert credentials.for_token("") is None and credentials.for_token("guess") is None


def test_issuing_again_replaces_the_old_grant() -> None:
    credentials = Credentials()
    old = credentials.issue("w1", "ep", live=False, peers=frozenset())
    new = credentials.issue("w1", "ep", live=False, peers=frozenset())
    assert credentials.for_token(old.token) is None and credentials.for_token(new.token) == new


def test_a_deployed_worker_calls_its_peers_and_a_live_worker_live_endpoints() -> None:
    credentials = Credentials()
    deployed = credentials.issue("w1", "api", live=False, peers=frozenset({"jobs"}))
    live = credentials.issue("w2", "live-x", live=True, peers=frozenset())
    assert deployed.may_call("jobs", live_endpoint=False)
    assert not deployed.may_call("other", live_endpoint=False)
    assert not deployed.may_call("live-y", live_endpoint=True)
    assert live.may_call("live-y", live_endpoint=True)
    assert not live.may_call("jobs", live_endpoint=False)


def test_bearer_reads_both_header_shapes() -> None:
    assert bearer("Bearer abc") == "abc" and bearer(b"bearer  abc ") == "abc"
    assert bearer("abc") == "abc" and bearer(None) == "" and bearer("Bearer") == "Bearer"
