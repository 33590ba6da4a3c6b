"""Bad deskriptors: each gets a one-line error naming its line, field and what is allowed.

tests/data/bad-deskriptors.jsonl holds one bad case per line (line 8 and 9 share a name:
line 9 is the duplicate). `validate` must list every one of them and exit 1; `list` must skip
them with a warning and still list the good ones; `get` on a bad line must fail with the same
message and write nothing.
"""

import json
import os

import pytest

from conftest import DATA, read_lines

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
    10: ["field `name`", "`/`"],
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
    assert "larger than the limit of 1048576 bytes" in p.stderr, p.stderr
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
