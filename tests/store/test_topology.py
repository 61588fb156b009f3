"""Store URLs: which topology each names, and the clear error for one that names none."""

from __future__ import annotations

from typing import Any

import pytest

from celery_resilience import ConfigurationError
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store.topology import CLUSTER, SENTINEL, SERVER, connect, parse_store_url


def test_one_server_keeps_its_url() -> None:
    """redis://, rediss:// and unix:// name one server, read by redis-py as they are."""
    for url in ("redis://h:6379/2", "rediss://:pw@h:6380/0", "unix:///tmp/redis.sock?db=1"):
        assert parse_store_url(url).kind == SERVER and parse_store_url(url).url == url


def test_a_cluster_is_named_by_any_of_its_nodes() -> None:
    """redis+cluster:// lists nodes to discover it from; a missing port is 6379."""
    found = parse_store_url("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2")
    assert found.kind == CLUSTER
    assert found.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert (found.username, found.password, found.tls) == ("user", "p@ss", False)
    assert parse_store_url("rediss+cluster://h:7000").tls


def test_sentinel_names_its_sentinels_and_the_service() -> None:
    """redis+sentinel:// lists sentinels (26379 by default), then the service and a database."""
    found = parse_store_url("redis+sentinel://:secret@s1:26380,s2/mymaster/3")
    assert found.kind == SENTINEL
    assert found.nodes == (("s1", 26380), ("s2", 26379))
    assert (found.service, found.db, found.password) == ("mymaster", 3, "secret")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://db", "a URL starting redis://"),
        ("redis+sentinel://s1:26379", "the service's name after the hosts"),
        ("redis+cluster://h:7000/3", "a Cluster has no databases"),
        ("redis+cluster://h:port", "numeric port"),
        ("redis+cluster://", "at least one host:port"),
        ("redis+sentinel://s1/mymaster/zero", "a database number"),
    ],
)
def test_a_url_naming_no_topology_fails_at_start_up(url: str, expected: str) -> None:
    """The setting is named, with what was expected."""
    with pytest.raises(ConfigurationError, match="resilience_store_url") as raised:
        ResilienceSettings.from_conf({"resilience_store_url": url})
    assert expected in str(raised.value)


def test_a_sentinel_broker_names_the_store_behind_the_same_sentinels() -> None:
    """Celery's sentinel:// broker, with its master_name, defaults the store to the same master."""
    settings = ResilienceSettings.from_conf(
        {},
        broker_url="sentinel://:pw@s1:26379/2;sentinel://:pw@s2:26379/2",
        broker_options={"master_name": "mymaster"},
    )
    assert settings.store_url == "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2"
    assert parse_store_url(settings.store_url).service == "mymaster"
    with pytest.raises(ConfigurationError, match="master_name"):
        ResilienceSettings.from_conf({}, broker_url="sentinel://s1:26379", broker_options={})


def test_store_options_must_be_a_mapping() -> None:
    """resilience_store_options is a mapping of connection option to value."""
    with pytest.raises(ConfigurationError, match="resilience_store_options"):
        ResilienceSettings.from_conf({"resilience_store_options": ["password"]})
    options = ResilienceSettings.from_conf({"resilience_store_options": {"password": "x"}}).store_options
    assert dict(options) == {"password": "x"}


def test_sentinels_of_a_tls_url_speak_tls_unless_told_otherwise() -> None:
    """rediss+sentinel:// gives the sentinels the servers' ssl options; sentinel_kwargs may opt them out."""

    def sentinel_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
        client = connect(parse_store_url(url), 1.0, options)  # nothing is connected yet
        sentinel = client.connection_pool.sentinel_manager.sentinels[0]
        return dict(sentinel.connection_pool.connection_kwargs)

    tls, plain = "rediss+sentinel://s1:26379/mymaster", "redis+sentinel://s1:26379/mymaster"
    assert sentinel_options(tls, {"ssl_ca_certs": "/ca.pem"})["ssl_ca_certs"] == "/ca.pem"
    opted_out = {"ssl_ca_certs": "/ca.pem", "sentinel_kwargs": {"ssl": False}}
    assert "ssl_ca_certs" not in sentinel_options(tls, opted_out)
    assert "ssl_ca_certs" not in sentinel_options(plain, {"ssl_ca_certs": "/ca.pem"})
