"""The dashboard's limits on ad-hoc previews, over HTTP only (no browser): any client can
invent selections, so their files go to a bounded area of their own (`<cache>/previews`,
`--preview-cache-size`), never to the main cache, and at most `--preview-concurrency` are
built at once (a request that finds no free slot within `--preview-wait` gets 503).

Every dashboard is stopped by its PID at the end, also when a test fails."""

import json
import os
from pathlib import Path
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from conftest import DATA, Dashboard, chunk_gets

TEST_SET = DATA / "test-set.jsonl"
# One hour of 2m_temperature over 30° × 60°: 119072 bytes in the test replica.
AREA = {"lat_start": "60", "lat_end": "30", "lon_start": "-20", "lon_end": "40",
        "variable": "2m_temperature"}
AREA_FILE = 119072
LIMIT = 300_000


@pytest.fixture
def dashboards():
    """Starts dashboards; every one is stopped by PID at teardown."""
    started = []

    def start(*args, **kwargs):
        d = Dashboard(*args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def ad_hoc(hour, **extra):
    """The map of one hour of AREA, as a query string."""
    return "/map.png?" + urlencode({**AREA, "time_start": f"2023-01-01T{hour:02d}:00",
                                    **extra})


def get(d, path):
    """(status, body, headers) of a GET; HTTP errors are returned, not raised."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(d.url + path, timeout=120) as r:
            return r.status, r.read(), r.headers, time.monotonic() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers, time.monotonic() - start


def files_under(path, exclude=None):
    """{relative path: size} of the files under `path` (temp files too), except `exclude`."""
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")
            if p.is_file() and (exclude is None or exclude not in p.parents)}


def main_entries(cache, previews):
    """Files of the main cache (not its bounded block-table log, the catalog index the
    dashboard keeps as a mount does, nor the preview area)."""
    return {k: v for k, v in files_under(cache, exclude=previews).items()
            if not {"blocktables", "catalogs"} & set(Path(k).parts)}


def test_ad_hoc_previews_stay_in_a_bounded_area_apart_from_the_main_cache(
        replica, tmp_path, dashboards):
    cache = tmp_path / "cache"
    previews = cache / "previews"
    d = dashboards(replica, cache, TEST_SET, tmp_path / "dashboard.log",
                   extra=("--preview-cache-size", str(LIMIT), "--preview-concurrency", "2"))
    # One at a time: after each, the area holds at most the limit plus the file just built.
    for hour in range(8):
        status, body, headers, _ = get(d, ad_hoc(hour))
        assert status == 200 and headers["Content-Type"] == "image/png", body[:300]
        held = files_under(previews)
        assert sum(held.values()) <= LIMIT + AREA_FILE, (hour, held)
        assert main_entries(cache, previews) == {}, "the main cache gains no preview"
    # The two most recent previews (all that fit), not the 8 built.
    assert len([p for p in held if p.endswith(".nc")]) == LIMIT // AREA_FILE == 2, held

    # Many at once: bounded while they run, and back under limit + one file after the next.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda h: get(d, ad_hoc(h)), range(8, 24)))
    assert {r[0] for r in results} <= {200, 503}, [(r[0], r[1][:200]) for r in results]
    assert main_entries(cache, previews) == {}
    assert sum(files_under(previews).values()) <= LIMIT + 3 * AREA_FILE
    assert get(d, ad_hoc(0, time_end="2023-01-01T00:30"))[0] == 200
    assert sum(files_under(previews).values()) <= LIMIT + AREA_FILE, files_under(previews)
    status = json.loads(get(d, "/api/status")[1])
    assert status["preview_cache_bytes"] <= LIMIT + AREA_FILE, status
    assert status["preview_cache_limit"] == LIMIT, status

    # A listed file is the dataset: it goes to the main cache, not the preview area.
    before = files_under(previews)
    assert get(d, "/map.png?file=multi_hour.nc")[0] == 200
    main = [p for p in files_under(cache, exclude=previews) if p.endswith(".nc")]
    assert len(main) == 1, main
    assert files_under(previews) == before
    # The same deskriptor given ad hoc is read from the main cache, not built again.
    line = next(l for l in TEST_SET.read_text().splitlines() if '"multi_hour"' in l)
    runs = json.loads(get(d, "/api/status")[1])["flow_runs"]
    assert get(d, "/map.png?" + urlencode({"deskriptor": line}))[0] == 200
    assert json.loads(get(d, "/api/status")[1])["flow_runs"] == runs
    assert files_under(previews) == before


def test_ad_hoc_builds_beyond_the_concurrency_limit_get_503_after_the_wait(
        http_source, tmp_path, dashboards):
    d = dashboards(http_source.url, tmp_path / "cache", TEST_SET, tmp_path / "dashboard.log",
                   extra=("--preview-concurrency", "1", "--preview-wait", "0.5"))
    http_source.delay["/2m_temperature/"] = 3  # every build takes at least 3 s
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda h: get(d, ad_hoc(h)), range(5)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 503, 503, 503, 503], [(r[0], r[1][:200]) for r in results]
    for status, body, headers, took in results:
        if status == 503:
            assert b"busy" in body and b"--preview-concurrency 1" in body, body
            assert headers["Retry-After"] == "5"
            assert took < 2.5, f"a refused request waited {took:.1f} s, not about 0.5 s"
    # Only one selection was read from the source: one hour's chunk.
    chunks = {p.rsplit("/", 1)[-1] for p in chunk_gets(http_source.requests)}
    assert len({c.split(".")[0] for c in chunks}) == 1, chunks
    status = json.loads(get(d, "/api/status")[1])
    assert status["previews_refused"] == 4 and status["flow_runs"] == 1, status

    # A refused selection is served once a slot is free; a listed file does not need one.
    http_source.delay.clear()
    refused = next(h for h, r in enumerate(results) if r[0] == 503)
    assert get(d, ad_hoc(refused))[0] == 200
    assert get(d, "/map.png?file=multi_hour.nc")[0] == 200


def test_preview_concurrency_0_builds_only_the_listed_files(replica, tmp_path, dashboards):
    d = dashboards(replica, tmp_path / "cache", TEST_SET, tmp_path / "dashboard.log",
                   extra=("--preview-concurrency", "0"))
    status, body, _, _ = get(d, ad_hoc(3))
    assert status == 403 and b"--preview-concurrency 0" in body, (status, body)
    assert get(d, "/map.png?file=multi_hour.nc")[0] == 200
    assert not any((tmp_path / "cache" / "previews").rglob("*.nc"))


def test_the_file_list_pages_and_finds_without_listing_every_file(dashboards, replica,
                                                                  tmp_path):
    """A big set: the page shows 500 files at a time with previous/next links and a search
    by part of the name; /api/files answers a page (offset, limit, find) and the total."""
    import re
    desk = tmp_path / "many.jsonl"
    desk.write_text("".join(
        f'{{"name": "f{i:04}", "time": "2023-01-01T00:00", "latitude": {i % 90}, '
        f'"longitude": {i % 360}, "variable": "2m_temperature"}}\n' for i in range(1203)))
    d = dashboards(replica, tmp_path / "cache", desk, tmp_path / "dashboard.log")

    def rows(path):
        status, body, _ = d.get(path)
        assert status == 200
        html = body.decode()
        table = html.split('id="file-table"', 1)[1].split("</table>", 1)[0]
        return html, re.findall(r"<code>([^<]+)</code>", table)

    html, names = rows("/")
    assert "Files (1203)" in html and "page 1 of 3" in html
    assert names == [f"f{i:04}.nc" for i in range(500)]
    nxt = re.search(r'id="next-page" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    html, names = rows(nxt)
    assert names[0] == "f0500.nc" and len(names) == 500 and "page 2 of 3" in html
    html, names = rows("/?files=2")
    assert names == [f"f{i:04}.nc" for i in range(1000, 1203)]
    assert 'id="next-page"' not in html and 'id="prev-page"' in html
    html, names = rows("/?find=f11")
    assert names == [f"f{i:04}.nc" for i in range(1100, 1200)]
    assert "Files (100 named *f11*, of 1203)" in html

    status, body, _ = d.get("/api/files?offset=1200&limit=10")
    page = json.loads(body)
    assert [f["name"] for f in page["files"]] == ["f1200.nc", "f1201.nc", "f1202.nc"]
    assert (page["total"], page["offset"], page["limit"]) == (1203, 1200, 10)
    page = json.loads(d.get("/api/files?find=f12&limit=2")[1])
    assert [f["name"] for f in page["files"]] == ["f1200.nc", "f1201.nc"] and page["total"] == 3
    page = json.loads(d.get("/api/files")[1])
    assert len(page["files"]) == 1000 and page["total"] == 1203 and page["error_count"] == 0


def test_a_deskriptors_file_replaced_with_the_same_mtime_is_read_again(dashboards, replica,
                                                                       tmp_path):
    """`rsync -a`, `cp -p` and `touch -r` + `mv` put a new deskriptors file in place with the
    old one's mtime: the dashboard sees the change all the same (another inode, another
    ctime), so a removed file is no longer listed nor downloadable."""
    line = ('{{"name": "{}", "time": "2023-01-01T00:00", "latitude": 47, "longitude": 8, '
            '"variable": "2m_temperature"}}\n')
    desk = tmp_path / "d.jsonl"
    desk.write_text(line.format("kept") + line.format("removed"))
    d = dashboards(replica, tmp_path / "cache", desk, tmp_path / "dashboard.log")

    def names():
        status, body, _ = d.get("/api/files")
        assert status == 200, body
        return [f["name"] for f in json.loads(body)["files"]]

    assert names() == ["kept.nc", "removed.nc"]
    assert d.get("/download?file=removed.nc")[0] == 200
    old = desk.stat()
    new = tmp_path / "d.jsonl.new"
    new.write_text(line.format("kept") + line.format("added"))
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(new, desk)
    assert desk.stat().st_mtime_ns == old.st_mtime_ns
    assert names() == ["kept.nc", "added.nc"]
    status, body, _ = d.get("/download?file=removed.nc")
    assert status == 400 and b'no file named "removed.nc"' in body, (status, body)
    assert d.get("/download?file=added.nc")[0] == 200
