"""Shared fixtures: one moto server per test session (per xdist worker), reset before each test that uses it.

    def test_x(aws_cfg):            # AwsConfig pointing at a clean moto server
        s3 = make_client("s3", aws_cfg)

Fake credentials and AWS_ENDPOINT_URL are set for the whole session, so nothing can reach real AWS.
"""

from __future__ import annotations

import os
import signal

import pytest

from reconcile.config import AwsConfig
from reconcile.simulate.aws_load import MotoServer, start_moto

# A shell starts a background job (`make test &`, a CI step run under nohup) with SIGINT ignored, and every process
# it starts inherits that, so `reconcile` would rightly keep ignoring it (reconcile/interrupt.py). The tests that
# stop a run with SIGINT stand for a person pressing Ctrl-C at a terminal: the test process takes SIGINT back, so the
# runs it starts receive it as they would there.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def own_default_state(tmp_path, monkeypatch):
    """Each test's runs record into a state of its own unless it names one: the default (RECONCILE_STATE unset) is
    reconcile-out/ in the current folder, shared by every test run from the checkout, where one test's whole run of a
    window would make another's incomplete re-run of it a refusal (run.keep_recorded)."""
    monkeypatch.setenv("RECONCILE_STATE", str(tmp_path / "own-state" / "reconcile-state.duckdb"))


@pytest.fixture(scope="session")
def moto_server():
    """A moto server subprocess on 127.0.0.1 and a free port, with fake credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAKE_ENV.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        server = start_moto()
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto server, emptied before this test (POST /moto-api/reset)."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def aws_cfg(moto: MotoServer) -> AwsConfig:
    """AwsConfig for a clean moto server."""
    return AwsConfig(endpoint_url=moto.endpoint, region="us-east-1")


@pytest.fixture
def no_real_aws(monkeypatch):
    """Fake credentials for a test that builds clients without moto (guards against touching real AWS)."""
    for k, v in FAKE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    yield os.environ


@pytest.fixture
def restore_environment():
    """The demo code points this process at its local servers through os.environ; undo that after the test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def zendesk_servers():
    """Start Zendesk-compatible servers (reconcile.simulate.zendesk_server.start's arguments); all stopped after."""
    from reconcile.simulate import zendesk_server

    handles = []

    def make(data, **kw):
        h = zendesk_server.start(data, **kw)
        handles.append(h)
        return h

    yield make
    for h in handles:
        h.stop()
