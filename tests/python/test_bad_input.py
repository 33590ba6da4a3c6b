"""Bad deskriptors: each gets a one-line error naming its line, field and what is allowed.

tests/data/bad-deskriptors.jsonl holds one bad case per line (line 8 and 9 share a name:
line 9 is the duplicate). `validate` must list every one of them and exit 1; `list` must skip
them with a warning and still list the good ones; `get` on a bad line must fail with the same
message and write nothing.
"""

import datetime
import json
import os
import subprocess

import pytest

from conftest import DATA, Dashboard, Runner, binary, clean_env, read_lines

BAD = DATA / "bad-deskriptors.jsonl"

# line -> substrings the error must contain (besides "line N").
EXPECTED = {
    1: ["malformed JSON"],
    2: ["field `variable`", "expected a variable name"],
    3: ["field `variable`", "unknown variable", 'did you mean "2m_temperature"'],
    4: ["field `variable`", 'did you mean "2m_temperature"'],
    5: ["field `time`", "outside the source", "1900-01-01T00:00 to 2050-12-31T23:00"],
    6: ["field `latitude`", "selects no points"],
    7: ["field `time.step`", "at least 1"],
    9: ["field `name`", "duplicate file name, line 8 already has it"],
    10: ["field `name`", "`//`"],
    11: ["field `name`", "`..`"],
    12: ["field `name`", "NUL"],
    13: ["field `name`", "at most 255 are allowed"],
    14: ["field `height`", "unknown key", "latitude, level, longitude, time"],
    15: ["field `latitude`", "not a latitude label", "nearest: 47"],
    16: ["field `latitude.start`", "expected a number"],
    17: ["field `time`", "not a time label"],
    18: ["field `time`", "ISO 8601"],
    19: ["field `longitude`", "-180..180"],
    20: ["larger than the limit", "--max-file-size"],
}


def test_validate_lists_every_bad_line_and_exits_1(run):
    p = run("validate", "--deskriptors", BAD, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout.splitlines()
    for line, needles in EXPECTED.items():
        hits = [o for o in out if f": line {line}," in o or f": line {line}:" in o]
        assert len(hits) == 1, (line, out)
        for needle in needles:
            assert needle in hits[0], (line, needle, hits[0])
    # Line 8 (first of the duplicate pair) is valid.
    assert not [o for o in out if ": line 8," in o or ": line 8:" in o]
    assert f"{len(EXPECTED)} bad lines, 1 valid deskriptors" in p.stdout


def test_validate_exits_0_on_good_files(run):
    for f in [DATA / "test-set.jsonl", DATA.parent.parent / "deskriptors.jsonl"]:
        p = run("validate", "--deskriptors", f)
        assert "all valid" in p.stdout


def test_list_skips_bad_lines_with_a_warning(run):
    p = run("list", "--json", "--deskriptors", BAD)
    rows = json.loads(p.stdout)
    assert [r["name"] for r in rows] == ["dup.nc"]
    assert p.stderr.count("warning: skipping line") == len(EXPECTED)


@pytest.mark.parametrize("line", [3, 6, 10])
def test_get_on_a_bad_line_fails_with_the_message_and_writes_nothing(run, tmp_path, line):
    out = tmp_path / "out.nc"
    p = run("get", "--deskriptors", BAD, "--line", line, "-o", out, check=False)
    assert p.returncode == 1
    assert f"line {line}" in p.stderr and EXPECTED[line][0] in p.stderr, p.stderr
    assert not out.exists()


def test_max_file_size_is_refused_before_any_fetch(run, tmp_path):
    lines = read_lines(DATA / "test-set.jsonl")
    whole_globe = next(i for i, l in enumerate(lines, 1) if '"whole_globe"' in l)
    p = run("get", "--deskriptors", DATA / "test-set.jsonl", "--line", whole_globe,
            "--max-file-size", "1M", "-o", tmp_path / "x.nc", "--stats", check=False)
    assert p.returncode == 1
    assert "larger than the limit of 1.0 MiB (1048576 bytes" in p.stderr, p.stderr
    assert not (tmp_path / "x.nc").exists()
    assert not list((tmp_path / "cache").rglob("*.nc"))


def test_an_empty_deskriptors_file_is_valid_and_lists_nothing(run, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "0 deskriptors, all valid" in run("validate", "--deskriptors", empty).stdout
    assert run.list(empty) == []


def test_an_unreachable_source_is_a_clear_error(run, tmp_path):
    p = run("list", "--source", tmp_path / "nowhere", check=False)
    assert p.returncode == 1
    assert "no such directory" in p.stderr
    p = run("list", "--source", "ftp://example.org/x", check=False)
    assert p.returncode == 1 and "unsupported scheme" in p.stderr


def test_a_100000_line_file_is_planned_and_its_bad_line_named(run, tmp_path):
    """100,000 lines (plus one bad one at the end): every line planned, the bad one named."""
    big = tmp_path / "big.jsonl"
    with open(big, "w") as f:
        for i in range(100_000):
            hour, region = i % 720, i // 720
            lat, lon = 70 - (region % 28) * 5, (region // 28) * 60 + 2
            day, h = 1 + hour // 24, hour % 24
            f.write(json.dumps({
                "time": f"2023-01-{day:02d}T{h:02d}:00",
                "latitude": {"start": lat, "end": lat - 1},
                "longitude": {"start": lon, "end": lon + 1},
                "variable": "2m_temperature"}) + "\n")
        f.write('{"variable": "2m_temperature", "time": "2023-01-01T11:00", "level": "x"}\n')
    p = run("validate", "--deskriptors", big, check=False, timeout=600)
    assert p.returncode == 1
    assert "line 100001, field `level`" in p.stdout
    assert "1 bad lines, 100000 valid deskriptors" in p.stdout


def test_the_mount_serves_the_valid_lines_and_warns_about_each_bad_one(replica,
                                                                       mount_factory):
    m = mount_factory(BAD, replica)
    assert os.listdir(m.mountpoint) == ["dup.nc"]
    log = m.log.read_text()
    for line in EXPECTED:
        assert f"skipping line {line}," in log or f"skipping line {line}:" in log, line


# The named lines of the test set, by name: good lines for files mixing good and bad ones.
NAMED = {json.loads(l)["name"]: l for l in read_lines(DATA / "test-set.jsonl") if '"name"' in l}


def not_utf8_file(path, names, bad_at):
    """Writes the lines of `names` (of the test set) to `path`, with a line at each position of
    `bad_at` (1-based) whose name has the byte 0xFF; returns the byte position of 0xFF."""
    bad = b'{"variable": "2m_temperature", "time": "2023-01-01T11:00", "name": "caf\xff"}'
    lines, good = [], iter(names)
    for i in range(1, len(names) + len(bad_at) + 1):
        lines.append(bad if i in bad_at else NAMED[next(good)].encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return bad.index(b"\xff") + 1


def test_a_line_that_is_not_utf8_is_named_and_the_other_lines_are_served(run, tmp_path):
    """One byte that is not UTF-8 spoils only its own line, for validate, list and get."""
    desk = tmp_path / "desk.jsonl"
    at = not_utf8_file(desk, ["multi_hour", "level_slice"], bad_at={2})
    p = run("validate", "--deskriptors", desk, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    hits = [o for o in p.stdout.splitlines() if ": line 2," in o]
    assert len(hits) == 1, p.stdout
    assert f"not valid UTF-8 at byte {at} of the line (0xFF)" in hits[0]
    assert r'\"caf\xFF\"}"' in hits[0], hits[0]
    assert "1 bad lines, 2 valid deskriptors" in p.stdout
    p = run("list", "--json", "--deskriptors", desk)
    assert [(r["line"], r["name"]) for r in json.loads(p.stdout)] == [
        (1, "multi_hour.nc"), (3, "level_slice.nc")]
    assert p.stderr.count("warning: skipping line 2, value") == 1, p.stderr
    p = run("get", "--deskriptors", desk, "--line", 2, "-o", tmp_path / "bad.nc", check=False)
    assert p.returncode == 1 and "line 2, value" in p.stderr and "not valid UTF-8" in p.stderr
    assert not (tmp_path / "bad.nc").exists()
    run("get", "--deskriptors", desk, "--line", 3, "-o", tmp_path / "good.nc")
    assert (tmp_path / "good.nc").stat().st_size > 0


def test_a_mount_and_its_reload_serve_the_lines_that_are_utf8(replica, mount_factory,
                                                               tmp_path):
    desk = tmp_path / "desk.jsonl"
    not_utf8_file(desk, ["multi_hour", "level_slice"], bad_at={1})
    m = mount_factory(desk, replica)
    assert sorted(os.listdir(m.mountpoint)) == ["level_slice.nc", "multi_hour.nc"]
    assert "line 1, value" in m.log.read_text()
    not_utf8_file(desk, ["multi_hour", "level_slice", "multi_variable"], bad_at={2, 4})
    p = subprocess.run([str(binary()), "reload", str(m.mountpoint)], capture_output=True,
                       text=True, timeout=120, env=clean_env())
    assert p.returncode == 0, p.stderr
    assert "ok: 3 files (1 added" in p.stdout, p.stdout
    assert sorted(os.listdir(m.mountpoint)) == [
        "level_slice.nc", "multi_hour.nc", "multi_variable.nc"]


def test_the_dashboard_lists_the_lines_that_are_utf8(replica, tmp_path):
    desk = tmp_path / "desk.jsonl"
    not_utf8_file(desk, ["multi_hour", "level_slice"], bad_at={2})
    d = Dashboard(replica, tmp_path / "cache", desk, tmp_path / "dashboard.log")
    try:
        status, body, _ = d.get("/api/files")
    finally:
        d.stop()
    assert status == 200, body
    listed = json.loads(body)
    assert [f["name"] for f in listed["files"]] == ["multi_hour.nc", "level_slice.nc"]
    assert len(listed["errors"]) == 1 and listed["errors"][0].startswith("line 2, value ")
    assert "not valid UTF-8" in listed["errors"][0]


def test_a_200000_label_list_is_validated(run, tmp_path):
    """List selectors are checked in linear time (pairwise, 200,000 labels took minutes):
    200,000 distinct hours are valid; a repeated label at the end of a long list is named."""
    start = datetime.datetime(2000, 1, 1)
    hours = [(start + datetime.timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M")
             for i in range(200_000)]
    good = {"variable": "2m_temperature", "latitude": 47, "longitude": 8, "time": hours}
    latitudes = [round(90 - 0.000_5 * i, 4) for i in range(200_000)] + [90]
    repeated = {"variable": "2m_temperature", "time": "2023-01-01T11:00",
                "latitude": latitudes}
    desk = tmp_path / "long.jsonl"
    desk.write_text(json.dumps(good) + "\n" + json.dumps(repeated) + "\n")
    # 200,000 hours are 200,000 chunk reads: allowed past the default --max-chunks.
    p = run("validate", "--deskriptors", desk, "--max-chunks", 200_000, check=False,
            timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 bad lines, 1 valid deskriptors" in p.stdout, p.stdout
    assert ": line 2, field `latitude`, value 90: listed twice" in p.stdout, p.stdout
    rows = run.list(desk, "--max-chunks", 200_000)
    assert len(rows) == 1 and rows[0]["size"] > 200_000 * 4


def test_names_with_control_or_bidi_characters_are_refused(run, tmp_path):
    """A name with a control character (newline, tab, any Cc) or a bidirectional formatting
    character is refused, the value escaped in the message."""
    names = {"new\nline": "new\\nline", "tab\tbed": "tab\\tbed",
             "bell\u0007": "bell\\u{0007}", "c1\u0085": "c1\\u{0085}",
             "evil\u202egnp": "evil\\u{202E}gnp", "iso\u2066late": "iso\\u{2066}late",
             "rtl\u200fmark": "rtl\\u{200F}mark", "arabic\u061cmark": "arabic\\u{061C}mark"}
    desk = tmp_path / "names.jsonl"
    lines = [json.dumps({"name": n, "variable": "2m_temperature", "time": "2023-01-01T11:00"})
             for n in names] + [NAMED["multi_hour"]]
    desk.write_text("\n".join(lines) + "\n")
    p = run("validate", "--deskriptors", desk, check=False)
    assert p.returncode == 1
    out = p.stdout.splitlines()
    for i, shown in enumerate(names.values(), 1):
        hits = [o for o in out if f": line {i}," in o]
        assert len(hits) == 1, (i, out)
        assert f'field `name`, value "{shown}.nc": a name may not contain control' in hits[0]
        assert "bidirectional formatting characters" in hits[0]
    assert f"{len(names)} bad lines, 1 valid deskriptors" in p.stdout
    assert not any(c in p.stdout for c in "\t\u202e\u2066\u200f\u061c\u0085\u0007")


def test_an_inline_deskriptor_error_names_the_option_not_line_0(run, tmp_path):
    for desk, needle in [
        ('{"variable": 5}', "--deskriptor: field `variable`, value 5: expected a variable"),
        ('{"variable": "2m_temprature", "time": "2023-01-01T11:00"}',
         '--deskriptor: field `variable`, value "2m_temprature": unknown variable; '
         'did you mean "2m_temperature"'),
        ('{"variable": "2m_temperature", "time": "2023-01-01T11:00", "lat": 47}',
         "--deskriptor: field `lat`: unknown key; did you mean `latitude`?"),
    ]:
        p = run("get", "--deskriptor", desk, "-o", tmp_path / "x.nc", check=False)
        assert p.returncode == 1
        assert needle in p.stderr, p.stderr
        assert "line 0" not in p.stderr, p.stderr
    assert not (tmp_path / "x.nc").exists()


def test_misspelled_keys_suggest_the_nearest_key(run, tmp_path):
    lines = {
        '{"variables": ["2m_temperature"], "time": "2023-01-01T11:00"}': ("variables",
                                                                          "variable"),
        '{"variable": "2m_temperature", "time": "2023-01-01T11:00", "lat": 47}': ("lat",
                                                                                  "latitude"),
        '{"variable": "2m_temperature", "time": "2023-01-01T11:00", "lon": 8}': ("lon",
                                                                                 "longitude"),
        '{"variable": "temperature", "time": "2023-01-01T11:00", "levels": [500]}': ("levels",
                                                                                     "level"),
    }
    desk = tmp_path / "keys.jsonl"
    desk.write_text("\n".join(lines) + "\n")
    p = run("validate", "--deskriptors", desk, check=False)
    assert p.returncode == 1
    out = p.stdout.splitlines()
    for i, (key, meant) in enumerate(lines.values(), 1):
        hits = [o for o in out if f": line {i}," in o]
        assert len(hits) == 1, (i, out)
        assert f"field `{key}`: unknown key; did you mean `{meant}`?" in hits[0], hits[0]


def test_a_size_that_cannot_be_computed_is_no_bad_line(replica, tmp_path):
    """NetCDF-4 sizes are measured on a template file in the temporary directory: when it
    cannot be written, the error says so, once, and blames no deskriptor line."""
    env = {"TMPDIR": str(tmp_path / "gone")}
    run = Runner(replica, tmp_path / "cache", tmp_path)
    for args in (["validate"], ["get", "--line", "1", "-o", tmp_path / "x.nc"]):
        p = run("--format", "netcdf4", *args, "--deskriptors", DATA.parent.parent /
                "deskriptors.jsonl", env=env, check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.count("computing the size of a NetCDF-4 file") == 1, p.stderr
        assert "line 1" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "x.nc").exists()
