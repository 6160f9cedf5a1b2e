"""The Zendesk source against a local server that speaks the Incremental Ticket Event Export."""

from __future__ import annotations

import base64
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import orjson
import pyarrow.compute as pc
import pytest

from reconcile import completeness
from reconcile.config import ZendeskConfig
from reconcile.errors import ConfigError, SourceError
from reconcile.ledger import SCHEMA
from reconcile.simulate import zendesk_server as zs
from reconcile.sources import zendesk
from reconcile.sources.zendesk import api as zendesk_api
from reconcile.sources.zendesk import export as zendesk_export
from reconcile.sources.zendesk.audits import AuditLedger
from reconcile.window import Window

T0 = 1_763_942_400  # 2025-11-24T00:00:00Z
NOW = datetime.fromtimestamp(T0 + 86400, timezone.utc)
TOKEN = "s3cr3t-api-token-value"
EMAIL = "admin@example.com"
BASIC = "Basic " + base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()
ENV = {"ZENDESK_EMAIL": EMAIL, "ZENDESK_API_TOKEN": TOKEN}


def ts(sec: int) -> datetime:
    return datetime.fromtimestamp(sec, timezone.utc)


def window(start: int = T0, end: int = T0 + 3600, now: datetime = NOW) -> Window:
    return Window(start=ts(start), end=ts(end), as_of=now)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(zendesk_api, "BACKOFF_BASE", 0.02)


@pytest.fixture
def server(zendesk_servers):
    return lambda data, **kw: zendesk_servers(data, **{"now": NOW, "per_page": 10, **kw})


def same_url(server, old, data, **kw):
    """A new server at `old`'s URL (saved pages are bound to the account URL that produced them)."""
    old.stop()
    return server(data, port=int(old.url.rsplit(":", 1)[1]), **kw)


def read(h, tmp_path, win=None, *, env=ENV, pages="pages", now=NOW, **cfg):
    cfg.setdefault("requests_per_minute", 6000)
    cfg.setdefault("max_wait", "10s")
    return zendesk.read(ZendeskConfig(url=h.url, **cfg), win or window(), tmp_path / pages, now=now,
                        progress=False, environ=env)


def child_ids(table, lo=None, hi=None) -> set[str]:
    out = set()
    for a in table.to_pylist():
        if (lo is None or a["timestamp"] >= lo) and (hi is None or a["timestamp"] < hi):
            out |= {str(c["id"]) for c in a["child_events"] if c["id"] is not None}
    return out


def ids(result) -> list[str]:
    return result.ledger["source_id"].to_pylist()


def test_exact_event_set_across_overlapping_pages(server, tmp_path):
    data = zs.synthetic_audits(95, start=T0 + 5, per_second=3, children=3)  # 3 a second: every page overlaps
    r = read(server(data), tmp_path)
    assert r.complete and r.problems == []
    assert sorted(ids(r)) == sorted(child_ids(data)) and len(ids(r)) == 95 * 3
    assert r.details["pages"] > 9 and r.details["overlap_duplicates"] > 0
    assert r.ledger.schema == SCHEMA
    row = r.ledger.filter(pc.equal(r.ledger["source_id"], "602")).to_pylist()[0]
    assert row["hop"] == "zendesk" and row["family"] == "api" and row["zendesk_key"] == "602"
    assert row["audit_id"] == 6 and row["event_type"] == "Change:status" and row["ticket_id"] == 1005
    assert row["event_time"] == row["observed_at"] == ts(T0 + 5 + 5 // 3)
    assert row["source_ref"].startswith("page-00001.json.gz#audit=6")
    assert [f["start_time"] for f in r.fingerprints][0] == T0
    assert set(r.fingerprints[0]) >= {"request", "start_time", "end_time", "count", "sha256", "fetched_at"}


def test_window_filtering_keeps_only_audits_created_in_window(server, tmp_path):
    data = zs.synthetic_audits(120, start=T0, per_second=2)
    r = read(server(data), tmp_path, window(T0 + 10, T0 + 40))
    assert r.complete
    assert sorted(ids(r)) == sorted(child_ids(data, T0 + 10, T0 + 40))
    assert r.details["end_time"] >= T0 + 40
    # it stops once end_time passes the window: far fewer pages than the 120 audits need
    assert r.details["pages"] <= 8


def test_429_storm_survived_honouring_retry_after(server, tmp_path):
    data = zs.synthetic_audits(30, start=T0)
    h = server(data, faults=zs.Faults(throttle=2, retry_after=1))
    r = read(h, tmp_path)
    assert r.complete and sorted(ids(r)) == sorted(child_ids(data))
    assert r.details["rate_limited"] == 2 and r.details["waited_s"] >= 2
    log = h.requests
    for prev, nxt in zip(log, log[1:]):
        if prev["status"] == 429:
            assert nxt["time"] - prev["time"] >= 1.0


def test_server_rate_limit_sends_rate_headers(server, tmp_path):
    h = server(zs.synthetic_audits(30, start=T0), rate_limit_per_minute=2)
    r = read(h, tmp_path, max_wait="1s")  # the 3rd request gets Retry-After ~60 s: more than max_wait
    assert not r.complete and r.details["rate_limited"] == 1 and r.details["pages"] == 2
    assert "429" in r.problems[0] and f"start_time={r.details['end_time']}" in r.problems[0]
    assert [q["status"] for q in h.requests] == [200, 200, 429]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{h.url}{zs.EXPORT_PATH}?start_time={T0}")
    assert e.value.code == 429 and int(e.value.headers["Retry-After"]) > 1
    assert e.value.headers["X-Rate-Limit"] == "2" and e.value.headers["X-Rate-Limit-Remaining"] == "0"


def test_5xx_truncated_and_dropped_pages_are_retried(server, tmp_path):
    data = zs.synthetic_audits(40, start=T0, per_second=2)
    h = server(data, faults=zs.Faults(errors=2, truncate=2, drop=1))
    r = read(h, tmp_path)
    assert r.complete and sorted(ids(r)) == sorted(child_ids(data))
    assert r.details["retries"] == 5 and r.details["requests"] == r.details["pages"] + 5
    assert r.details["rate_limited"] == 0


def test_never_recovering_5xx_returns_incomplete_within_max_wait(server, tmp_path):
    h = server(zs.synthetic_audits(30, start=T0), faults=zs.Faults(errors=10**9, error_status=503))
    t = time.monotonic()
    r = read(h, tmp_path, max_wait="0.5s")
    assert time.monotonic() - t < 3
    # waited_s counts the failed requests' own time too: at most max_wait plus the last request's
    assert not r.complete and r.records == 0 and r.details["waited_s"] <= 0.5 + 0.2
    assert "kept answering 503" in r.problems[0] and f"start_time={T0}" in r.problems[0]


def test_slow_answers_time_out_and_count_as_failures(server, tmp_path):
    h = server(zs.synthetic_audits(5, start=T0), faults=zs.Faults(delay=0.5))
    r = read(h, tmp_path, timeout="0.1s", max_wait="0.3s")
    assert not r.complete and "timeouts" in r.problems[0]


def test_same_second_repeat_steps_one_second_and_is_incomplete(server, tmp_path):
    data = zs.same_second_audits(5, at=T0 + 100, per_page=10)  # 15 audits in second T0+100, pages of 10
    h = server(data, per_page=10)
    r = read(h, tmp_path)
    assert not r.complete
    assert r.details["same_second_steps"] == [T0 + 100]
    assert any("may be missing" in p for p in r.problems)
    assert len(h.requests) < 6  # no endless loop
    got = set(ids(r))
    assert child_ids(data, hi=T0 + 100) <= got and child_ids(data, lo=T0 + 101) <= got
    assert 0 < len(got & child_ids(data, T0 + 100, T0 + 101)) < 15 * 2


@pytest.mark.parametrize("env,header", [
    (ENV, BASIC),
    ({"ZENDESK_OAUTH_TOKEN": "oauth-tok"}, "Bearer oauth-tok"),
])
def test_authorization_header_is_exact(server, tmp_path, env, header):
    h = server(zs.synthetic_audits(3, start=T0), auth=header)
    r = read(h, tmp_path, env=env)
    assert r.complete and r.records == 6
    assert {q["headers"]["Authorization"] for q in h.requests} == {header}


def test_refused_credentials_name_the_env_vars(server, tmp_path):
    h = server(zs.synthetic_audits(3, start=T0), auth="Bearer other")
    with pytest.raises(SourceError) as e:
        read(h, tmp_path)
    msg = str(e.value)
    assert "401" in msg and "ZENDESK_EMAIL" in msg and "ZENDESK_OAUTH_TOKEN" in msg and "admin" in msg
    assert TOKEN not in msg and BASIC not in msg


def test_missing_url_or_credentials_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ZENDESK_URL"):
        zendesk.read(ZendeskConfig(), window(), tmp_path, now=NOW, progress=False, environ=ENV)
    with pytest.raises(ConfigError, match="ZENDESK_API_TOKEN.*ZENDESK_OAUTH_TOKEN"):
        zendesk.read(ZendeskConfig(url="https://acme.zendesk.com"), window(), tmp_path, now=NOW, progress=False,
                     environ={"ZENDESK_EMAIL": EMAIL})
    with pytest.raises(ConfigError, match="https"):
        zendesk.read(ZendeskConfig(url="http://acme.zendesk.com"), window(), tmp_path, now=NOW, progress=False,
                     environ=ENV)


def test_secrets_never_reach_details_fingerprints_problems_logs_or_pages(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    h = server(zs.synthetic_audits(20, start=T0), auth=BASIC, faults=zs.Faults(errors=1, throttle=1, retry_after=0))
    r = read(h, tmp_path)
    h.set_faults(errors=10**9)
    r2 = read(h, tmp_path, window(T0 + 3600, T0 + 7200), pages="other", max_wait="0.2s")
    assert r.complete and not r2.complete
    saved = b"".join(p.read_bytes() for p in (tmp_path / "pages").iterdir())
    for secret in (TOKEN, BASIC, BASIC.split()[1]):
        for text in (repr(r.details), repr(r.fingerprints), repr(r.problems), repr(r2.problems), repr(r2.details),
                     caplog.text):
            assert secret not in text
        assert secret.encode() not in saved


def test_resume_replays_saved_pages_without_refetching(server, tmp_path):
    data = zs.synthetic_audits(60, start=T0, per_second=2)
    first = server(data, rate_limit_per_minute=3)
    r1 = read(first, tmp_path, max_wait="1s")
    assert not r1.complete and r1.details["pages"] == 3
    saved_starts = {q["start_time"] for q in first.requests if q["status"] == 200}

    second = same_url(server, first, data)
    r2 = read(second, tmp_path)
    assert r2.complete and r2.details["replayed_pages"] == 3
    fetched = [q["start_time"] for q in second.requests]
    assert fetched[0] == r1.details["end_time"] and not saved_starts & set(fetched)
    assert sorted(ids(r2)) == sorted(child_ids(data))
    assert len(r2.fingerprints) == r2.details["pages"] == 3 + len(fetched)

    # a third run needs no request at all
    third = same_url(server, second, data)
    r3 = read(third, tmp_path)
    assert third.requests == [] and sorted(ids(r3)) == sorted(ids(r2))


def test_changed_saved_page_is_refetched(server, tmp_path):
    data = zs.synthetic_audits(30, start=T0, per_second=2)
    first = server(data)
    read(first, tmp_path)
    (tmp_path / "pages" / "page-00002.json.gz").write_bytes(b"not the page")
    h = same_url(server, first, data)
    r = read(h, tmp_path)
    assert r.details["replayed_pages"] == 1 and h.requests[0]["start_time"] == r.fingerprints[1]["start_time"]
    assert sorted(ids(r)) == sorted(child_ids(data))


def test_rejects_child_without_id_and_audit_without_created_at(server, tmp_path):
    good = {"id": 1, "ticket_id": 5, "timestamp": T0 + 1,
            "child_events": [{"id": 11, "event_type": "Create"}, {"event_type": "Comment"}]}
    undated = {"id": 2, "ticket_id": 5, "timestamp": T0 + 2, "created_at": None,
               "child_events": [{"id": 21, "event_type": "Comment"}]}
    orphan = {"id": 3, "ticket_id": None, "timestamp": T0 + 3, "child_events": [{"id": 31, "event_type": "Create"}]}
    # a bare date: Python's parser would read it as midnight, hours away from the event (ledger.TIME_TEXT)
    day = ts(T0 + 4).strftime("%Y-%m-%d")
    day_only = {"id": 4, "ticket_id": 5, "timestamp": T0 + 4, "created_at": day,
                "child_events": [{"id": 41, "event_type": "Comment"}]}
    r = read(server(zs.audits_table([good, undated, orphan, day_only])), tmp_path)
    assert ids(r) == ["11"]
    rej = r.rejects.to_pylist()
    assert [x["reason"] for x in rej] == ["child event without id", "audit without created_at",
                                         "audit without ticket_id",
                                         f"unreadable created_at {day!r} (not an ISO-8601 date and time)"]
    assert rej[0]["source"] == "zendesk" and rej[0]["source_ref"] == "page-00001.json.gz#audit=1"
    assert '"Comment"' in rej[0]["raw"]


def test_ids_that_are_no_whole_number_are_rejects():
    """An id or ticket id given as a boolean (which Python counts as an int), a fraction or text is a reject: read as
    a number it would pin the event on ticket 1, or the next ticket. (The simulated API's typed table cannot serve
    such a page, so the audits go to the page reader as JSON decodes them.)"""
    c = '"event_type": "Comment"'
    page = orjson.loads(f"""[
        {{"id": 1, "ticket_id": true, "created_at": "2025-11-24T00:00:01Z", "child_events": [{{"id": 11, {c}}}]}},
        {{"id": 2, "ticket_id": 5.5, "created_at": "2025-11-24T00:00:02Z", "child_events": [{{"id": 21, {c}}}]}},
        {{"id": 3, "ticket_id": 5, "created_at": "2025-11-24T00:00:03Z",
          "child_events": [{{"id": true}}, {{"id": 32, {c}}}]}},
        {{"id": "4", "ticket_id": 5, "created_at": "2025-11-24T00:00:04Z", "child_events": [{{"id": 41, {c}}}]}},
        {{"id": 5, "ticket_id": 5, "created_at": "2025-11-24T00:00:05Z", "child_events": [{{"id": 51, {c}}}]}}]""")
    led = AuditLedger(T0 * 1000, (T0 + 60) * 1000)
    led.add_page("page-00001.json.gz", page)
    led.add_page("page-00002.json.gz", page[3:])  # pages overlap: an audit without a usable id is rejected once
    rows, rejects = led.tables()
    assert rows["source_id"].to_pylist() == ["32", "51"] and rows["ticket_id"].to_pylist() == [5, 5]
    assert rejects["reason"].to_pylist() == ["ticket_id 'True' is not a number", "ticket_id '5.5' is not a number",
                                             "child event id 'True' is not a number", "audit id '4' is not a number"]


def test_an_empty_page_that_is_not_the_end_is_no_proof(server, tmp_path):
    """A page that lists nothing, is not the end of the stream and does not move on ends the walk (it would repeat
    forever), but proves nothing about what follows: the read is incomplete, and a re-run resumes from there."""
    data = zs.synthetic_audits(30, start=T0, per_second=1)
    h = server(data)
    h.set_faults(stall=1)
    first = read(h, tmp_path)
    assert not first.complete and ids(first) == []
    assert any("empty page that is not the end of the stream: it lists nothing after" in p for p in first.problems)
    again = read(h, tmp_path)  # the fault is spent: the same pages dir resumes
    assert again.complete and sorted(ids(again)) == sorted(child_ids(data))


def test_an_empty_page_that_is_not_the_end_proves_nothing_whatever_end_time_it_gives(server, tmp_path):
    """The same empty page, its end_time two days on: followed, the walk stepped over the window and called the read
    complete with nothing listed (a whole run said "clean", exit 0, its losses gone). It lists nothing after its
    start: the read stops there, incomplete; a re-run resumes from it."""
    data = zs.synthetic_audits(30, start=T0, per_second=1)
    h = server(data)
    h.set_faults(stall=1, tail={"end_time": T0 + 2 * 86400})
    first = read(h, tmp_path)
    assert not first.complete and ids(first) == []
    assert any("empty page that is not the end of the stream: it lists nothing after" in p for p in first.problems)
    h.set_faults(tail={})
    again = read(h, tmp_path)
    assert again.complete and sorted(ids(again)) == sorted(child_ids(data))


@pytest.mark.parametrize("tail", [{"end_of_stream": "false"}, {"end_of_stream": 0}, {"end_time": True}])
def test_page_fields_of_another_type_are_refused(server, tmp_path, tail):
    """end_of_stream is a boolean and end_time an integer (PIPELINE.md §2): the text "false" read as true would end
    the walk at the first page, with the rest of the window unlisted and the read called complete."""
    h = server(zs.synthetic_audits(30, start=T0, per_second=1))
    h.set_faults(tail=tail)
    field, value = next(iter(tail.items()))
    with pytest.raises(SourceError, match=f"answered with {field} {str(value)!r}.*end_of_stream true or false"):
        read(h, tmp_path)


def test_an_end_time_beyond_the_page_is_no_proof_of_the_audits_after_it(server, tmp_path):
    """end_time is the latest time in the page (the export reference) and the next page starts there: a page that
    says end_time two hours after its last audit (a proxy rewriting it, or items left out after paging) stepped over
    every audit in between, and the read called 10 of 60 audits complete. The page now counts as listed to its last
    audit, and the next starts there: every audit is read."""
    data = zs.synthetic_audits(60, start=T0, per_second=1)
    h = server(data)
    h.set_faults(tail={"end_time": T0 + 7200})
    r = read(h, tmp_path, window(T0, T0 + 3600))
    assert r.complete, r.problems
    assert sorted(ids(r)) == sorted(child_ids(data))
    assert len(h.requests) > 6  # each page re-asked from its last audit's second


@pytest.mark.parametrize("stamp", ["float", "absent"])
def test_a_page_lists_to_its_last_audit_whatever_its_timestamps(server, tmp_path, stamp):
    """The same lying end_time, every audit's `timestamp` a JSON float (a round trip through a float-typed language)
    or left out: the page was held to its integer timestamps only, found none, and proved its end_time -- the read
    stopped at the first page and called 10 of 60 audits complete (a run said "clean", exit 0). An audit's time is
    its created_at, as the ledger judges it by: every audit is read."""
    data = zs.synthetic_audits(60, start=T0, per_second=1)
    served = {}
    for row in data.to_pylist():
        a = zs._api_audit(row)
        if stamp == "float":
            a["timestamp"] = float(a["timestamp"])
        else:
            del a["timestamp"]
        served[row["id"]] = orjson.dumps(a)
    h = server(data)
    h.set_faults(corrupt=served, tail={"end_time": T0 + 7200})
    r = read(h, tmp_path, window(T0, T0 + 3600))
    assert r.complete, r.problems
    assert sorted(ids(r)) == sorted(child_ids(data))


def test_a_child_event_without_a_type_is_a_reject(server, tmp_path):
    """A child with no event_type may be any kind, one the model knows among them: kept as an unknown kind it was
    `unverified` at worst, its loss unseen, and the read complete. It is an unparseable reject: the read is not
    whole."""
    data = zs.synthetic_audits(10, start=T0, per_second=1)
    row = data.to_pylist()[3]
    a = zs._api_audit(row)
    del a["child_events"][0]["event_type"]
    h = server(data)
    h.set_faults(corrupt={row["id"]: orjson.dumps(a)})
    r = read(h, tmp_path, window(T0, T0 + 3600))
    assert r.rejects["reason"].to_pylist() == ["child event without event_type"]
    assert not completeness.decide(r, True).complete  # a reject that may hide an in-window event (the one rule)
    assert len(ids(r)) == len(child_ids(data)) - 1


def test_the_support_type_scope_is_asked_for_and_binds_saved_pages(server, tmp_path):
    """The export lists AI-agent tickets only when support_type_scope asks for them ("agent" is its default: the
    export reference's query parameters). The read always names the scope ([zendesk] support_type_scope, default
    "agent"), so what it judges is said, and pages saved for one scope are never replayed as another's."""
    data = zs.synthetic_audits(40, start=T0)  # tickets 1000..1039
    ai = frozenset(range(1000, 1010))
    h = server(data, ai_agent_tickets=ai)
    agent = read(h, tmp_path, window(T0, T0 + 3600))
    assert agent.complete and set(agent.ledger["ticket_id"].to_pylist()) == set(range(1010, 1040))
    every = read(h, tmp_path, window(T0, T0 + 3600), support_type_scope="all")  # the same pages dir
    assert every.complete and set(every.ledger["ticket_id"].to_pylist()) == set(range(1000, 1040))
    assert (tmp_path / "pages" / "set-aside-1").is_dir()  # the agent-only pages, not replayed for "all"
    assert {r["query"].get("support_type_scope") for r in h.requests} == {"agent", "all"}
    # pages saved before the scope was named (the same query as "agent", Zendesk's default) stay valid for "agent"
    old = tmp_path / "old"
    read(h, old, window(T0, T0 + 3600))
    index = old / "pages" / "index.jsonl"
    entries = [orjson.loads(line) for line in index.read_bytes().splitlines()]
    for e in entries:
        e["request"] = e["request"].removesuffix("&support_type_scope=agent")
        e["url"] = h.url + e["request"]
    index.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    asked = len(h.requests)
    again = read(h, old, window(T0, T0 + 3600))
    assert again.complete and len(h.requests) == asked and not list((old / "pages").glob("set-aside-*"))


def test_tail_of_the_last_minute_is_pending(server, tmp_path):
    now = ts(T0 + 100)
    data = zs.synthetic_audits(100, start=T0)
    r = read(server(data, now=now), tmp_path, window(T0, T0 + 90), now=now)
    assert r.details["tail_pending"] and not r.complete
    assert any("one minute" in p for p in r.problems)
    assert sorted(ids(r)) == sorted(child_ids(data, T0, T0 + 41))  # the server cut-off: now - 60 s


def test_an_as_of_ahead_of_the_clock_never_lists_the_last_minute(server, tmp_path):
    """`--as-of` may be a few minutes ahead of this machine's clock (cli_options.AS_OF_SKEW), but the export's
    cut-off is one minute before Zendesk answers: with the run's as_of as "now", a window that ended 10 s ago read
    complete without its last minute, and its saved last page kept the gap on every re-run."""
    real = int(time.time())
    data = zs.synthetic_audits(500, start=real - 500)
    h = server(data, now=None)  # the real clock, as Zendesk's
    ahead = datetime.fromtimestamp(real + 240, timezone.utc)
    r = read(h, tmp_path, window(real - 400, real - 10, now=ahead), now=ahead)
    assert r.details["tail_pending"] and not r.complete
    again = read(h, tmp_path, window(real - 400, real - 10, now=ahead), now=ahead)
    assert not again.complete


def test_requests_are_paced_and_progress_goes_to_stderr(server, tmp_path, capsys):
    h = server(zs.synthetic_audits(40, start=T0, per_second=2))
    zendesk.read(ZendeskConfig(url=h.url, requests_per_minute=300), window(), tmp_path, now=NOW, progress=True,
                 environ=ENV)
    times = [q["time"] for q in h.requests]
    assert len(times) >= 4 and times[-1] - times[0] >= 0.2 * (len(times) - 1) - 0.02
    out = capsys.readouterr()
    assert out.out == "" and "pages" in out.err


@pytest.mark.parametrize("retry_after", [0, None])
def test_429_with_retry_after_zero_or_absent_never_spins(server, tmp_path, retry_after):
    h = server(zs.synthetic_audits(5, start=T0), faults=zs.Faults(throttle=10**9, retry_after=retry_after))
    t = time.monotonic()
    r = read(h, tmp_path, max_wait="2.5s")
    assert time.monotonic() - t < 6
    # each 429 waits at least RETRY_FLOOR (1 s): 2.5 s of budget allows 2 waits, so 3 requests, not thousands
    assert len(h.requests) == 3 and r.details["rate_limited"] == 3
    assert not r.complete and "429" in r.problems[0]
    times = [q["time"] for q in h.requests]
    assert all(b - a >= zendesk.RETRY_FLOOR - 0.05 for a, b in zip(times, times[1:]))


def test_a_retry_after_past_max_wait_gives_up_at_once_and_says_what_it_asked(server, tmp_path):
    """Retry-After of eleven days: waiting is no use, and the read gives up after one request -- saying the wait
    asked for and naming the key (it said "kept answering 429" and hid the eleven days: hang review)."""
    h = server(zs.synthetic_audits(5, start=T0), faults=zs.Faults(throttle=10**9, retry_after=999999))
    r = read(h, tmp_path, max_wait="20s")
    assert len(h.requests) == 1 and not r.complete
    assert r.problems[0].startswith("Zendesk API kept answering 429 (rate limited), asking for a wait of 999,999 s "
                                    "(waited 0s; [zendesk] max_wait 20s would be passed)"), r.problems


def test_a_trickled_body_times_out_as_a_whole_and_counts_toward_max_wait(server, tmp_path):
    """One byte every 0.5 s: every socket read returns in time, but the request as a whole may take `timeout`."""
    h = server(zs.synthetic_audits(5, start=T0), faults=zs.Faults(trickle=10**9, trickle_interval=0.5))
    t = time.monotonic()
    r = read(h, tmp_path, timeout="1s", max_wait="1.5s")
    elapsed = time.monotonic() - t
    assert elapsed < 6 and not r.complete and "timeouts" in r.problems[0]
    # the failed requests' own time is waiting too: two 1 s timeouts pass a 1.5 s budget
    assert len(h.requests) == 2 and r.details["waited_s"] >= 1.5


def test_a_body_without_end_is_refused_at_max_page_size_not_held_until_the_deadline(server, tmp_path):
    """A body streamed fast and for ever (a proxy gone wrong) was held whole in memory until `timeout` (about 3x its
    size: hang review). It is read up to [zendesk] max_page_size, then the read stops (a SourceError: the Zendesk
    input is read in part, exit 3), naming the key."""
    h = server(zs.synthetic_audits(5, start=T0), faults=zs.Faults(endless=1))
    t = time.monotonic()
    with pytest.raises(SourceError, match=r"more than 2,000,000 bytes \(\[zendesk\] max_page_size\)"):
        read(h, tmp_path, timeout="60s", max_page_size="2MB")
    assert time.monotonic() - t < 20 and len(h.requests) == 1
    # the same page with an end is read whole within the bound
    assert read(server(zs.synthetic_audits(5, start=T0)), tmp_path / "again", max_page_size="2MB").complete


def test_a_redirect_is_not_followed_and_the_credentials_stay_home(server, tmp_path):
    """urllib follows a 3xx with every header, Authorization included, to any host and scheme. A Zendesk URL that
    answers with a redirect (a proxy, a domain moved elsewhere) is an error naming ZENDESK_URL; the other host never
    hears from us."""
    elsewhere = server(zs.synthetic_audits(3, start=T0))
    h = server(zs.synthetic_audits(3, start=T0), auth=BASIC, faults=zs.Faults(redirect=elsewhere.url))
    with pytest.raises(SourceError) as e:
        read(h, tmp_path)
    msg = str(e.value)
    assert "HTTP 302 to http://127.0.0.1" in msg and "not followed" in msg and "ZENDESK_URL" in msg
    assert TOKEN not in msg and BASIC not in msg
    assert len(h.requests) == 1 and elsewhere.requests == []


def test_an_answer_that_ignores_start_time_stops_the_walk(server, tmp_path):
    """A caching proxy that drops the query string serves the first page to every request. The walk stepped a
    'repeating second' after it forever (a request each); now it stops, incomplete, within a few requests."""
    h = server(zs.synthetic_audits(60, start=T0), faults=zs.Faults(ignore_start_time=True))
    r = read(h, tmp_path)
    assert not r.complete and len(h.requests) == 3
    assert any("does not follow start_time" in p and "ZENDESK_URL" in p for p in r.problems), r.problems


def test_the_same_page_for_two_stepped_seconds_is_no_headway():
    """An API that echoes the cursor as the page's end, with the same audits each time: a second stepped over twice
    in a row with nothing new is the same page again. A genuine second of more than a page brings new audits."""
    h = zendesk_export.Headway()
    page = {"ticket_events": [{"id": 1}, {"id": 2}]}

    def entry(start, same):
        return {"start_time": start, "end_time": start, "count": 2, "end_of_stream": False, "same_second": same}
    assert h.problem(entry(100, False), page) is None
    assert h.problem(entry(100, True), page) is None  # a full second: its first page may repeat the one before
    assert h.problem(entry(101, True), {"ticket_events": [{"id": 3}]}) is None  # new audits: it moves on
    assert h.problem(entry(102, True), {"ticket_events": [{"id": 3}]}) is None
    assert "does not move on" in h.problem(entry(103, True), {"ticket_events": [{"id": 3}]})


def test_an_audit_whose_comment_is_a_voice_comment_is_read_whole():
    """A call's voice comment is the audit's comment (Ticket Audit events reference, "Voice comment event",
    VoiceComment): the audit was rejected as fetched without the comment sideload, making the Zendesk read incomplete
    on every Talk account (zendesk review)."""
    audit = {"id": 9001, "ticket_id": 7, "created_at": "2026-11-23T10:00:00Z", "child_events": [
        {"id": 90011, "event_type": "VoiceComment", "comment_present": True, "public": False,
         "body": "Call from +1 555 0100"},
        {"id": 90012, "event_type": "Change", "field_name": "status", "value": "open", "previous_value": "new",
         "comment_present": True}]}
    led = AuditLedger(T0 * 1000 - 10**12, T0 * 1000 + 10**12)
    led.add_page("page-00001.json.gz", [audit])
    ledger, rejects = led.tables()
    assert rejects.num_rows == 0 and ledger["event_type"].to_pylist() == ["VoiceComment", "Change:status"]


def test_comments_are_read_with_the_comment_events_sideload(server, tmp_path):
    """Without include=comment_events the export gives a comment no child event, only `comment_present` on the others
    (Zendesk's Incremental Ticket Event Export reference, "Sideloading"): every comment would be missing from what
    Zendesk emitted, a lost Comment Created never reported. The read asks for the sideload; a page with a comment
    but no Comment child (a proxy that drops the query) is a reject, so the read is not whole; and pages saved without
    the sideload (an older version's) are set aside and fetched again, never replayed."""
    data = zs.synthetic_audits(20, start=T0, per_second=2, children=3)
    h = server(data)
    r = read(h, tmp_path)
    assert r.complete and sorted(ids(r)) == sorted(child_ids(data))
    assert "Comment" in r.ledger["event_type"].to_pylist()
    assert {q["query"].get("include") for q in h.requests} == {"comment_events"}

    with urllib.request.urlopen(f"{h.url}{zs.EXPORT_PATH}?start_time={T0}") as answer:  # as asked without it
        audits = orjson.loads(answer.read())["ticket_events"]
    on_page = {a["id"] for a in audits}
    commented = [a["id"] for a in data.to_pylist()
                 if a["id"] in on_page and any(c["event_type"] == "Comment" for c in a["child_events"])]
    assert commented and all("comment_present" in c for a in audits if a["id"] in commented for c in a["child_events"])
    led = AuditLedger(T0 * 1000, (T0 + 3600) * 1000)
    led.add_page("page-00001.json.gz", audits)
    ledger, rejects = led.tables()
    assert "Comment" not in ledger["event_type"].to_pylist()
    assert rejects["source_ref"].to_pylist() == [f"page-00001.json.gz#audit={a}" for a in commented]
    assert set(rejects["reason"].to_pylist()) == {
        "the audit has a comment (comment_present) but no Comment (or VoiceComment) child event: the page was "
        "fetched without include=comment_events"}

    index = tmp_path / "pages" / "index.jsonl"
    index.write_text(index.read_text().replace("&include=comment_events", ""))
    again = same_url(server, h, data)
    r2 = read(again, tmp_path)
    assert r2.complete and r2.details["replayed_pages"] == 0 and r2.details["pages_set_aside"]
    assert sorted(ids(r2)) == sorted(child_ids(data)) and again.requests


def test_the_end_of_the_stream_proves_what_its_now_does_not_its_end_time(server, tmp_path):
    """An early run (two hours into a four-hour window) whose last page, the end of the stream, gives an end_time
    six hours on (a proxy, a bug in between): the run said "re-run later", and the re-run, over the same pages dir,
    took that page as listing the whole window (0 requests, 714 of 1,440 children). The end of the stream lists up
    to its last audit and its read's now - 60 s: the re-run fetches from there, and lists the whole window."""
    class Clock:
        def __init__(self, sec):
            self.sec = sec

        def __call__(self):
            return ts(self.sec)
    audits = [{"id": i + 1, "ticket_id": 1000 + i % 97, "timestamp": T0 + 7 + i * 30, "updater_id": 7,
               "child_events": [{"id": (i + 1) * 100 + k, "event_type": "Comment"} for k in range(2)]}
              for i in range(720)]
    clock = Clock(T0 + 2 * 3600)
    h = server(zs.audits_table(audits), now=clock, per_page=20)
    win = Window(start=ts(T0), end=ts(T0 + 4 * 3600), as_of=ts(T0 + 7 * 3600))
    h.set_faults(tail={"end_time": T0 + 6 * 3600})
    early = read(h, tmp_path, win, now=ts(clock.sec))
    assert not early.complete
    h.set_faults(tail={})
    clock.sec = T0 + 7 * 3600
    again = read(h, tmp_path, win, now=ts(clock.sec))
    assert again.complete and again.details["requests"] > 0
    assert sorted(ids(again)) == sorted(str((i + 1) * 100 + k) for i in range(720) for k in range(2)
                                        if T0 + 7 + i * 30 < T0 + 4 * 3600)
