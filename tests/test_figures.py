"""Figures an operator can trust, checked against psql on a real cluster: each slot once per
server, samples at their own times, failures in the history, sizes as pg_size_pretty prints."""

from __future__ import annotations

import re
from contextlib import closing
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rosetta_web.extensions import db as _db
from rosetta_web.formatting import pg_size_pretty
from rosetta_web.models import Source
from rosetta_web.monitor.rounds import sample_sources, scheduled_round
from rosetta_web.monitor.scheduler import MonitorScheduler
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import isoformat, utcnow

from .factories import MONITOR_PASSWORD, add_source
from .pg import free_port


def _psql(source_db, sql: str, database: str = "shop", params: tuple = ()):
    with closing(source_db["cluster"].connect(database)) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


@pytest.fixture
def second_database(source_db):
    """A second database, 'shop2', of the same cluster as 'shop'."""
    if not _psql(source_db, "SELECT 1 FROM pg_database WHERE datname = 'shop2'", "postgres"):
        source_db["cluster"].create_database("shop2")
    return "shop2"


def _slots_on_server(source_db) -> tuple[int, int]:
    ((total, inactive),) = _psql(
        source_db, "SELECT count(*), count(*) FILTER (WHERE NOT active) FROM pg_replication_slots"
    )
    return total, inactive


def test_two_databases_of_one_server_count_its_slots_once(
    app, api, browser, source_db, second_database
):
    """Two sources that are two databases of one cluster: the dashboard, /api/v1/summary and
    /metrics show each of the cluster's slots once, as psql counts them."""
    shop = add_source(app, "shop", source_db["port"])
    shop2 = add_source(app, "shop2", source_db["port"], database=second_database)
    with app.app_context():
        assert all(sample.ok for sample in after_round(scheduled_round()))
    total, inactive = _slots_on_server(source_db)
    assert total >= 1

    summary = api.get("/api/v1/summary").get_json()
    assert summary["slots"] == {"total": total, "inactive": inactive}
    assert summary["sources"]["OK"] == 2
    worst = summary["worst_slot"]
    ((retained_now,),) = _psql(
        source_db,
        "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))::bigint "
        "FROM pg_replication_slots",
    )
    assert worst["source_id"] in (shop, shop2) and worst["retained_bytes"] <= retained_now
    (identifier,) = _psql(source_db, "SELECT system_identifier::text FROM pg_control_system()")[0]
    assert worst["server"] == identifier

    dashboard = browser.get("/").get_data(as_text=True)
    assert f'<span id="slots-total">{total}</span>' in dashboard
    assert f'id="slots-inactive">{inactive} inactive' in dashboard
    assert worst["slot_name"] in re.search(r'id="worst-slot">(.*?)</span>', dashboard, re.S)[1]

    metrics = api.get("/metrics").get_data(as_text=True)
    series = [
        sample.labels
        for family in text_string_to_metric_families(metrics)
        if family.name == "rosetta_slot_active"
        for sample in family.samples
    ]
    assert len(series) == total and {labels["server"] for labels in series} == {identifier}

    # Each source's page: its own database's slots first, the others apart.
    page = browser.get(f"/sources/{shop2}").get_data(as_text=True)
    own, others = page.split("Other slots on the same server")
    assert "rosetta_slot" not in own.split("Slots of database shop2")[1]
    assert "rosetta_slot" in others
    assert "unlimited" in page  # max_slot_wal_keep_size is -1 on the test cluster


def test_samples_come_back_at_their_own_times_with_their_values(app, api, source_db):
    """Samples taken at known times come back at those times, with the figures PostgreSQL
    gave; the slot's inactive_since is the first sample that saw it inactive."""
    source_id = add_source(app, "shop", source_db["port"])
    start = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    moments = [start + timedelta(minutes=m, seconds=7) for m in (1, 2, 4)]
    taken = []
    with app.app_context():
        for moment in moments:
            (sample,) = after_round(sample_sources(now=moment))
            assert sample.ok, sample.error
            taken.append(sample)
    data = api.get(
        f"/api/v1/sources/{source_id}/wal-history",
        query_string={"start": isoformat(start), "end": isoformat(start + timedelta(minutes=9))},
    ).get_json()
    assert data["bucket_seconds"] == 0
    assert data["times"] == [isoformat(moment) for moment in moments]
    assert data["errors"] == [None, None, None]
    assert data["series"]["retained_bytes"]["last"] == [s.retained_bytes for s in taken]
    assert data["series"]["size_bytes"]["last"] == [s.size_bytes for s in taken]
    slot = data["slots"]["rosetta_slot"]
    expected = [next(x for x in s.slots if x.slot_name == "rosetta_slot") for s in taken]
    assert slot["last"] == [x.retained_bytes for x in expected] and slot["own"] is True
    slots = api.get(f"/api/v1/sources/{source_id}/slots").get_json()
    ours = next(row for row in slots if row["slot_name"] == "rosetta_slot")
    assert ours["active"] is False and ours["inactive_since"] == isoformat(moments[0])


def test_a_bucketed_range_ends_at_the_latest_sample_and_stays_put(app, api, source_db):
    """With more samples than points, the last point is the latest sample, at its time, and
    asking again a few seconds later gives the same points."""
    source_id = add_source(app, "shop", source_db["port"])
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    with app.app_context():
        for minute in range(1, 21):
            moment = start + timedelta(minutes=minute, seconds=13)
            (latest,) = after_round(sample_sources(now=moment))
    query = {"start": isoformat(start), "end": isoformat(start + timedelta(minutes=25))}
    first = api.get(
        f"/api/v1/sources/{source_id}/wal-history", query_string={**query, "max_points": 5}
    ).get_json()
    assert first["bucket_seconds"] == 300 and len(first["times"]) <= 6
    assert first["times"][-1] == isoformat(start + timedelta(minutes=20, seconds=13))
    assert first["series"]["retained_bytes"]["last"][-1] == latest.retained_bytes
    assert first["series"]["size_bytes"]["last"][-1] == latest.size_bytes
    shifted = {
        "start": isoformat(start + timedelta(seconds=4)),
        "end": isoformat(start + timedelta(minutes=25, seconds=4)),
        "max_points": 5,
    }
    again = api.get(f"/api/v1/sources/{source_id}/wal-history", query_string=shifted).get_json()
    assert again["times"] == first["times"]


def test_a_failure_between_two_good_samples_is_a_null_point_with_its_error(app, api, source_db):
    """A failed sample breaks the line: a point at its time, no values, its error."""
    source_id = add_source(app, "shop", source_db["port"])
    start = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    moments = [start + timedelta(minutes=m) for m in (1, 2, 3)]

    def set_password(password: str) -> None:
        with app.app_context():
            _db.session.get(Source, source_id).pg_password = password
            _db.session.commit()

    with app.app_context():
        assert after_round(sample_sources(now=moments[0]))[0].ok
    set_password("Wr0ng-Secret!")
    with app.app_context():
        assert not after_round(sample_sources(now=moments[1]))[0].ok
    set_password(MONITOR_PASSWORD)
    with app.app_context():
        assert after_round(sample_sources(now=moments[2]))[0].ok
    data = api.get(
        f"/api/v1/sources/{source_id}/wal-history", query_string={"start": isoformat(start)}
    ).get_json()
    assert data["times"] == [isoformat(moment) for moment in moments]
    assert data["series"]["retained_bytes"]["last"][1] is None
    assert None not in (data["series"]["retained_bytes"]["last"][::2])
    assert data["errors"][0] is None and "password authentication failed" in data["errors"][1]
    assert "Wr0ng-Secret!" not in str(data)


def test_sizes_read_as_pg_size_pretty_prints_them(source_db):
    """Every size reads exactly as psql's pg_size_pretty prints it."""
    sizes = [0, 1, 56, 10239, 10240, 10752, 20971007, 20971008, 845712384, 10**12, 2**53, -10240]
    rows = _psql(
        source_db,
        "SELECT s, pg_size_pretty(s) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(s, i) "
        "ORDER BY i",
        params=(sizes,),
    )
    assert [pg_size_pretty(int(size)) for size, _ in rows] == [pretty for _, pretty in rows]


def test_sample_now_from_the_api_and_the_page(app, api, browser, source_db):
    """POST .../sample returns the sample or the error; the page's button does the same."""
    ok_id = add_source(app, "shop", source_db["port"])
    dead_id = add_source(app, "dead", free_port())
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    good = api.post(f"/api/v1/sources/{ok_id}/sample").get_json()
    assert good["ok"] is True and good["error"] is None
    assert good["sample"]["source_id"] == ok_id and good["monitor"]["status"] == "OK"
    bad = api.post(f"/api/v1/sources/{dead_id}/sample").get_json()
    assert bad["ok"] is False and "Connection refused" in bad["error"]
    assert bad["sample"] is None and bad["monitor"]["status"] == "ERROR"
    assert api.post("/api/v1/sources/999/sample").status_code == 404

    response = browser.post(f"/sources/{dead_id}/sample", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Sampling &#39;dead&#39; failed: cannot connect to 127.0.0.1:" in html
    assert "Connection refused" in html
    response = browser.post(f"/sources/{ok_id}/sample", follow_redirects=True)
    assert "Sampled &#39;shop&#39; just now." in response.get_data(as_text=True)


def test_a_new_source_is_sampled_right_after_it_is_saved(app, api, source_db):
    """The monitor samples a source saved through the API at once, not at the next round."""
    body = {
        "name": "fresh",
        "pg_host": "127.0.0.1",
        "pg_port": source_db["port"],
        "pg_database": "shop",
        "pg_username": "rosetta_monitor",
        "pg_password": MONITOR_PASSWORD,
        "publication_name": "rosetta_pub",
    }
    created = api.post("/api/v1/sources", json=body).get_json()
    assert created["monitor"]["status"] == "PENDING"
    monitor = MonitorScheduler(app)
    try:
        monitor.sample_new()
        after = api.get(f"/api/v1/sources/{created['id']}").get_json()
        assert after["monitor"]["status"] == "OK"
        monitor.sample_new()  # nothing new: no round stored
        with app.app_context():
            from rosetta_web.models import MonitorRound

            assert _db.session.scalar(_db.select(_db.func.count(MonitorRound.id))) == 1
    finally:
        monitor.stop()


def test_a_source_chart_has_only_its_own_sample_times(app, api, source_db, second_database):
    """Another database of the same server sampled alone adds no point (no break in the WAL
    line) to this source's chart, though the slots are the server's."""
    shop = add_source(app, "shop", source_db["port"])
    shop2 = add_source(app, "shop2", source_db["port"], database=second_database)
    start = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    both, alone = start + timedelta(minutes=1), start + timedelta(minutes=2)
    with app.app_context():
        assert all(sample.ok for sample in after_round(sample_sources(now=both)))
        assert after_round(sample_sources(now=alone, source_id=shop2))[0].ok

    def times(source_id: int) -> list[str]:
        query = {"start": isoformat(start)}
        data = api.get(f"/api/v1/sources/{source_id}/wal-history", query_string=query)
        return data.get_json()["times"]

    assert times(shop) == [isoformat(both)]
    assert times(shop2) == [isoformat(both), isoformat(alone)]


def test_sampling_by_hand_while_the_lane_still_waits_on_the_source(app, api, source_db):
    """Sample now works while the scheduler's lane for slow sources still holds the source."""
    from rosetta_web.monitor.workers import lanes

    source_id = add_source(app, "shop", source_db["port"])
    lanes(app).in_flight.add(source_id)
    try:
        answer = api.post(f"/api/v1/sources/{source_id}/sample")
    finally:
        lanes(app).in_flight.discard(source_id)
    assert answer.status_code == 200 and answer.get_json()["ok"] is True


def test_a_late_lane_never_rolls_a_servers_slots_back(app, api, source_db, second_database):
    """Slots stored by a round are kept when a lane started earlier stores after it."""
    from rosetta_web.models import Server, SlotMetric

    add_source(app, "shop", source_db["port"])
    late = add_source(app, "shop2", source_db["port"], database=second_database)
    now = utcnow().replace(microsecond=0)
    earlier = now - timedelta(seconds=30)
    with app.app_context():
        assert after_round(sample_sources(now=now))[0].ok
        assert after_round(sample_sources(now=earlier, source_id=late))[0].ok
        server = _db.session.scalar(_db.select(Server))
        assert isoformat(server.last_sampled_at) == isoformat(now)
        old = _db.select(_db.func.count(SlotMetric.id)).where(SlotMetric.recorded_at == earlier)
        assert _db.session.scalar(old) == 0
    summary = api.get("/api/v1/summary").get_json()
    assert summary["slots"]["total"] == _slots_on_server(source_db)[0]
