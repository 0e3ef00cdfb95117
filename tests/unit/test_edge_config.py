"""The edge's HAProxy configuration, its recorded weights and the percentile of logged times (no engine)."""
from __future__ import annotations

from setuptools_grocker.deploy.deployer import Publish
from setuptools_grocker.deploy.edge import FIRST_PORT, SLOTS, Pool, parse_state, percentile, render_config


def test_two_pools_in_one_backend_with_their_weights() -> None:
    routes = [Publish.parse("127.0.0.1:8080:8000"), Publish.parse("127.0.0.1:8443:8000")]
    config = render_config("shop", routes, [Pool("shop"), Pool("shop-canary", 0)])
    lines = [line.strip() for line in config.splitlines()]
    # One backend per target port, both pools in it, re-resolved from Swarm's DNS, weights that change at run time.
    assert lines.count("backend to-8000") == 1
    assert f"server-template shop- 1-{SLOTS} tasks.shop:8000 weight 100" in lines
    assert f"server-template shop-canary- 1-{SLOTS} tasks.shop-canary:8000 weight 0" in lines
    assert "balance roundrobin" in lines and "nameserver docker 127.0.0.11:53" in lines
    assert "option redispatch 1" in lines and "retries 3" in lines
    assert [f"bind :{FIRST_PORT}", f"bind :{FIRST_PORT + 1}"] == [ln for ln in lines if ln.startswith("bind ")]
    assert parse_state(config) == [Pool("shop", 100), Pool("shop-canary", 0)]


def test_a_configuration_not_made_by_grocker_has_no_pools() -> None:
    assert parse_state("global\n    log stdout\n") == []


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile(values, 100) == 100
    assert percentile([7], 99) == 7 and percentile([], 50) is None
