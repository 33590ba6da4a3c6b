"""Never wrong bytes, from outside: a source that vanishes (a moved directory, an HTTP server
answering 404 for everything), a cache directory holding what someone planted (symlinks to
other files, entries copied without their checksum, stray files). Each case: the reader gets
the exact bytes of the flow, or EIO with the cause; nothing wrong is cached."""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FORMAT_DIR, Runner

# One small file (level_slice of tests/data/test-set.jsonl: two hours, two levels).
LINE = {"name": "slice", "time": {"start": "2023-01-01T11:00", "end": "2023-01-01T12:00"},
        "level": {"start": 500, "end": 850}, "latitude": {"start": 48, "end": 46},
        "longitude": {"start": 7, "end": 10}, "variable": ["temperature"]}


@pytest.fixture
def one_line(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(LINE) + "\n")
    return path


def reference_from(source, one_line, tmp_path):
    """The file's exact bytes (the source's address is in them), built with a cache of its
    own."""
    out = tmp_path / "reference.nc"
    Runner(source, tmp_path / "ref-cache", tmp_path)(
        "get", "--deskriptors", one_line, "--line", 1, "-o", out)
    return out.read_bytes()


@pytest.fixture
def reference(replica, one_line, tmp_path):
    return reference_from(replica, one_line, tmp_path)


def entries(cache):
    return [p for p in Path(cache).rglob("*.nc") if p.parent.name != "tmp"]


def read_errno(path):
    with pytest.raises(OSError) as e:
        Path(path).read_bytes()
    return e.value.errno


def test_a_moved_away_source_directory_is_eio_and_nothing_is_cached(
        replica, one_line, mount_factory, tmp_path):
    store = tmp_path / "store"
    # A copy of hard links: the same bytes, a directory of our own to move away.
    subprocess.run(["cp", "-al", str(replica), str(store)], check=True)
    reference = reference_from(store, one_line, tmp_path)
    cache = tmp_path / "cache"
    m = mount_factory(one_line, store, cache=cache)
    store.rename(tmp_path / "away")
    assert read_errno(m.mountpoint / "slice.nc") == errno.EIO
    cause = os.getxattr(m.mountpoint / "slice.nc", "user.sodeda.error").decode()
    assert "temperature/.zarray" in cause and "source is gone" in cause, cause
    assert entries(cache) == [], "no file of missing values was cached"
    (tmp_path / "away").rename(store)
    assert (m.mountpoint / "slice.nc").read_bytes() == reference


def test_an_http_source_answering_404_for_everything_is_eio(
        http_source, one_line, mount_factory, tmp_path):
    reference = reference_from(http_source.url, one_line, tmp_path)
    cache = tmp_path / "cache"
    m = mount_factory(one_line, http_source.url, cache=cache)
    http_source.fail = {"": 404}  # a proxy turning a revoked permission into 404
    assert read_errno(m.mountpoint / "slice.nc") == errno.EIO
    assert entries(cache) == []
    http_source.fail = {}
    assert (m.mountpoint / "slice.nc").read_bytes() == reference


def planted_path(run, one_line):
    (entry,) = run.list(one_line)
    identity = entry["identity"]
    return Path(run.cache) / FORMAT_DIR / identity[:2] / f"{identity}.nc", entry["size"]


def test_a_symlink_planted_at_an_entry_is_never_served(
        replica, one_line, reference, mount_factory, tmp_path):
    run = Runner(replica, tmp_path / "cache", tmp_path)
    path, size = planted_path(run, one_line)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * size)
    secret.chmod(0o600)
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    m = mount_factory(one_line, replica, cache=run.cache, extra=["--allow-other"])
    assert (m.mountpoint / "slice.nc").read_bytes() == reference
    assert not path.is_symlink(), "the planted link was replaced by the built entry"
    assert secret.read_bytes() == b"s" * size
    m.stop()
    # `get` too.
    path.unlink()
    path.symlink_to(secret)
    p = run("get", "--deskriptors", one_line, "--line", 1, "-o", tmp_path / "got.nc")
    assert "not trusted" in p.stderr and "symlink" in p.stderr, p.stderr
    assert (tmp_path / "got.nc").read_bytes() == reference


def test_an_entry_copied_without_its_checksum_and_damaged_is_rebuilt(
        replica, one_line, reference, tmp_path):
    run = Runner(replica, tmp_path / "cache", tmp_path)
    run("get", "--deskriptors", one_line, "--line", 1, "-o", tmp_path / "first.nc")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tmp_path / "cache"), str(copy)], check=True)
    (path,) = entries(copy)
    with pytest.raises(OSError):
        os.getxattr(path, "user.sodeda.crc32c")  # cp -r kept no xattrs
    data = bytearray(path.read_bytes())
    data[len(data) - 10] ^= 0xFF
    path.write_bytes(bytes(data))
    again = Runner(replica, copy, tmp_path)
    p = again("get", "--deskriptors", one_line, "--line", 1, "-o", tmp_path / "again.nc")
    assert "no checksum" in p.stderr and "built from the source" in p.stderr, p.stderr
    assert (tmp_path / "again.nc").read_bytes() == reference


def test_stray_files_in_the_cache_crash_nothing_and_are_left_alone(
        replica, one_line, reference, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    stray = [cache / FORMAT_DIR / "zz" / "a.nc", cache / FORMAT_DIR / "ab" / "é.nc",
             cache / FORMAT_DIR / "a.nc", cache / FORMAT_DIR / "x" / "y" / "z.nc", cache / "notes.txt"]
    for f in stray:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 4096)
    run = Runner(replica, cache, tmp_path)
    run("list", "--deskriptors", one_line, "--cache-max-size", "1K")
    run("preload", "--deskriptors", one_line, "--cache-max-size", "1K")
    m = mount_factory(one_line, replica, cache=cache, extra=["--cache-max-size", "1K"])
    assert (m.mountpoint / "slice.nc").read_bytes() == reference
    for f in stray:
        assert f.read_bytes() == b"x" * 4096, f


def test_a_cache_directory_every_user_can_write_gets_a_warning(replica, one_line, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    p = Runner(replica, cache, tmp_path)("list", "--deskriptors", one_line)
    assert "writable by every user" in p.stderr, p.stderr
    cache.chmod(0o755)
    p = Runner(replica, cache, tmp_path)("list", "--deskriptors", one_line)
    assert "writable by every user" not in p.stderr, p.stderr
