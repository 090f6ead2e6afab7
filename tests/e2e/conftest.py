"""Session fixtures: one demo gateway shared by most tests (test_canary and test_crash start
their own). `cargo build -p router-one` must have run first (.ci/run does it)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

import gateway as gw_mod

_GATEWAYS: list[gw_mod.Gateway] = []


def tracked(g: gw_mod.Gateway) -> gw_mod.Gateway:
    """A test's own gateway, registered so that a failing test shows its log too."""
    _GATEWAYS.append(g)
    return g


def log_dir(tmp_path_factory) -> Path:
    d = os.environ.get("E2E_LOG_DIR")
    if d:
        p = Path(d)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session", autouse=True)
def _fd_limit_for_many_sockets():
    """Some tests hold over a thousand sockets at once (test_cluster sends 1,000 requests
    together, test_edge opens 1,100 connections); a CI runner's soft limit is often 1,024
    while its hard limit is far higher, so the suite raises its own soft limit, as the gateway
    does at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture(scope="session", autouse=True)
def _fresh_suite_databases():
    """Under E2E_POSTGRES=1, databases an earlier run left behind are dropped first."""
    if gw_mod.ON_POSTGRES:
        gw_mod.drop_suite_databases()


@pytest.fixture(scope="session")
def gw(tmp_path_factory):
    """The shared demo gateway."""
    data = tmp_path_factory.mktemp("shared") / "data"
    g = gw_mod.Gateway(data, log_path=log_dir(tmp_path_factory) / "shared-gateway.log")
    _GATEWAYS.append(g)
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def client(gw):
    """The official openai client, pointed at the gateway with the demo inference key."""
    c = gw.openai()
    yield c
    c.close()


@pytest.fixture(scope="session")
def http(gw):
    """Raw inference calls with the demo inference key."""
    with gw.http(gw.api_key) as c:
        yield c


@pytest.fixture(scope="session")
def anon(gw):
    """Raw calls with no key at all."""
    with gw.http(None) as c:
        yield c


@pytest.fixture(scope="session")
def mgmt(gw):
    """Management API with the demo account's management key."""
    with gw.http(gw.management_key) as c:
        yield c


@pytest.fixture(scope="session")
def models(http):
    return gw_mod.model_pricing(http)


@pytest.fixture(scope="session")
def chat_model(models):
    return gw_mod.pick_chat_model(models)


@pytest.fixture(scope="session")
def embedding_model(models):
    return gw_mod.pick_embedding_model(models)


@pytest.fixture(scope="session")
def made_ids():
    """Request ids of the successful requests the suite made against the shared gateway:
    test_zz_records checks each has exactly one usage record with the right cost."""
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for g in _GATEWAYS:
            rep.sections.append((f"gateway log {g.log_path}", g.log_tail(1500)))
