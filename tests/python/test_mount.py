"""The mount, for real: sodeda-mount over the replica, read with ls, cat, cp, xarray, ncdump,
cdo, pread, mmap. One test per promise of docs/SEMANTICS.md (named in each docstring)."""

import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xarray as xr

from conftest import (clean_env, chunk_gets, DATA, ROOT, Runner, binary, mount_binary, mounted_at,
                      read_lines)
from reference import open_source, reference

TEST_SET = DATA / "test-set.jsonl"
LINES = read_lines(TEST_SET)


def test_ls_shows_one_file_per_deskriptor_with_exact_sizes(replica, mount_factory, run):
    """Names and sizes: `ls -l` lists every valid deskriptor with its exact size, before any
    data is fetched; `cat` returns exactly that many bytes."""
    m = mount_factory(TEST_SET, replica)
    listing = run.list(TEST_SET)
    names = sorted(os.listdir(m.mountpoint))
    assert names == sorted(e["name"] for e in listing)
    assert m.stats()["flow_runs"] == 0, "stat must not build files"
    for e in listing:
        assert os.stat(m.mountpoint / e["name"]).st_size == e["size"]
    assert m.stats()["source_requests"] == 0 or m.stats()["flow_runs"] == 0
    for e in listing[:6]:
        data = subprocess.run(["cat", m.mountpoint / e["name"]], capture_output=True).stdout
        assert len(data) == e["size"], e["name"]


def test_cp_r_gives_the_files_of_get(replica, mount_factory, tmp_path):
    """Content: a file's bytes through the mount are exactly those of `sodeda-era5 get`."""
    m = mount_factory(TEST_SET, replica)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", f"{m.mountpoint}/", str(copy)], check=True)
    direct = Runner(replica, tmp_path / "other-cache", tmp_path)
    for e in direct.list(TEST_SET):
        direct("get", "--deskriptors", TEST_SET, "--line", e["line"], "-o", tmp_path / "g.nc")
        assert (copy / e["name"]).read_bytes() == (tmp_path / "g.nc").read_bytes(), e["name"]


def test_readers_through_the_mount_match_the_reference(replica, mount_factory):
    """Readers: xarray (netCDF4 and scipy engines), ncdump and cdo read the files through the
    mount, and the values match xarray on the source."""
    m = mount_factory(TEST_SET, replica)
    ds_source = open_source(replica)
    for name, line in [("multi_variable.nc", 4), ("crossing_zero.nc", 9),
                       ("level_list_mixed.nc", 6)]:
        path = m.mountpoint / name
        for engine in ("netcdf4", "scipy"):
            with xr.open_dataset(path, engine=engine) as ours:
                for var, ref in reference(ds_source, json.loads(LINES[line - 1])).items():
                    np.testing.assert_array_equal(ours[var].values, ref.values)
        assert subprocess.run(["ncdump", "-h", path], capture_output=True).returncode == 0
        info = subprocess.run(["cdo", "-s", "sinfon", path], capture_output=True, text=True)
        assert info.returncode == 0, info.stderr


def test_random_partial_reads_and_eof(replica, mount_factory, tmp_path):
    """Reads: pread at any offset, mmap and head -c return exactly the file's bytes; a read at
    or past the end returns nothing."""
    m = mount_factory(TEST_SET, replica)
    path = m.mountpoint / "whole_globe.nc"
    whole = path.read_bytes()
    size = len(whole)
    assert size == os.stat(path).st_size > 4_000_000
    rng = np.random.default_rng(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(200):
            off = int(rng.integers(0, size))
            n = int(rng.integers(1, 300_000))
            assert os.pread(fd, n, off) == whole[off:off + n]
        assert os.pread(fd, 100, size) == b""
        assert os.pread(fd, 100, size + 12345) == b""
        assert os.pread(fd, 100, size - 10) == whole[-10:]
    finally:
        os.close(fd)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert mm[size // 3: size // 3 + 4096] == whole[size // 3: size // 3 + 4096]
        assert mm[-1] == whole[-1]
    head = subprocess.run(["head", "-c", "1000", path], capture_output=True).stdout
    assert head == whole[:1000]


def test_second_read_and_remount_do_not_touch_the_source(replica, http_source, mount_factory,
                                                         tmp_path):
    """Cache: the first read builds the file; later reads, and reads after unmount and
    remount, come from the cache without a source request."""
    cache = tmp_path / "cache"
    m = mount_factory(TEST_SET, http_source.url, cache=cache)
    first = (m.mountpoint / "multi_hour.nc").read_bytes()
    built = set(chunk_gets(http_source.requests))
    assert len(built) == 6, "6 hours of one variable"
    before = m.stats()["source_requests"]
    # Bypass the kernel page cache: a new open of a new mount is the honest check.
    again = (m.mountpoint / "multi_hour.nc").read_bytes()
    assert again == first and m.stats()["source_requests"] == before
    assert os.getxattr(m.mountpoint / "multi_hour.nc", "user.sodeda.cached") == b"yes"
    m.stop()
    n = len(http_source.requests)
    m2 = mount_factory(TEST_SET, http_source.url, cache=cache, name="mnt2")
    assert (m2.mountpoint / "multi_hour.nc").read_bytes() == first
    assert chunk_gets(http_source.requests[n:]) == []
    stats = m2.stats()
    # Served from the cache: by our reads, or by the kernel reading the cache file itself.
    assert stats["flow_runs"] == 0
    assert stats["cache_hits"] >= 1


def test_concurrent_readers_share_one_flow(replica, http_source, mount_factory):
    """Concurrency: 16 readers of one uncached file wait on one flow run and get identical
    bytes."""
    http_source.delay = {"/2m_temperature/": 0.3}
    m = mount_factory(TEST_SET, http_source.url)
    path = m.mountpoint / "multi_hour.nc"
    barrier = threading.Barrier(16)

    def read(_):
        barrier.wait()
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        digests = set(pool.map(read, range(16)))
    assert len(digests) == 1
    assert m.stats()["flow_runs"] == 1
    gets = chunk_gets(http_source.requests)
    # 6 chunks; each read as a header and a block range (the block read path), once.
    assert len(set(gets)) == 6 and len(gets) == 12, gets


def test_a_slow_flow_does_not_block_ls_or_cached_reads(replica, http_source, mount_factory):
    """Responsiveness: while one file is being built (a slow source), `ls`, `stat` and reads
    of cached files answer in under 100 ms."""
    m = mount_factory(TEST_SET, http_source.url)
    cached = (m.mountpoint / "exact_lists.nc").read_bytes()  # built before the slowdown
    http_source.delay = {"/surface_pressure/": 3.0}
    slow = threading.Thread(target=lambda: (m.mountpoint / "steps.nc").read_bytes())
    slow.start()
    try:
        time.sleep(0.5)  # the slow flow is now waiting on the source
        assert slow.is_alive()
        for _ in range(5):
            t0 = time.monotonic()
            names = os.listdir(m.mountpoint)
            os.stat(m.mountpoint / "multi_hour.nc")
            t1 = time.monotonic()
            fd = os.open(m.mountpoint / "exact_lists.nc", os.O_RDONLY)
            data = os.pread(fd, len(cached), 0)
            os.close(fd)
            t2 = time.monotonic()
            assert data == cached and "steps.nc" in names
            assert t1 - t0 < 0.1, f"ls/stat took {t1 - t0:.3f} s"
            assert t2 - t1 < 0.1, f"cached read took {t2 - t1:.3f} s"
    finally:
        slow.join(timeout=120)
    assert not slow.is_alive()


WRITES = {
    "open for writing": lambda p, d: os.open(p, os.O_WRONLY),
    "open read-write": lambda p, d: os.open(p, os.O_RDWR),
    "truncate": lambda p, d: os.truncate(p, 0),
    "create": lambda p, d: open(d / "new.nc", "w"),
    "mkdir": lambda p, d: os.mkdir(d / "newdir"),
    "unlink": lambda p, d: os.unlink(p),
    "rename": lambda p, d: os.rename(p, d / "renamed.nc"),
    "chmod": lambda p, d: os.chmod(p, 0o644),
    "utime": lambda p, d: os.utime(p, (0, 0)),
    "symlink": lambda p, d: os.symlink(p, d / "link.nc"),
    "link": lambda p, d: os.link(p, d / "hard.nc"),
    "setxattr": lambda p, d: os.setxattr(p, "user.x", b"1"),
    "removexattr": lambda p, d: os.removexattr(p, "user.sodeda.cached"),
}


def test_every_write_gets_erofs_and_the_mount_stays_up(replica, mount_factory):
    """Read-only: every kind of modification fails with EROFS; the mount stays up."""
    m = mount_factory(TEST_SET, replica)
    target = m.mountpoint / "exact_lists.nc"
    before = target.read_bytes()
    for what, op in WRITES.items():
        with pytest.raises(OSError) as info:
            op(target, m.mountpoint)
        assert info.value.errno == errno.EROFS, (what, info.value)
    assert target.read_bytes() == before
    assert sorted(os.listdir(m.mountpoint)) == sorted(os.listdir(m.mountpoint))


def test_built_files_are_opened_in_kernel_passthrough(replica, mount_factory):
    """Warm reads: once a file is built, opens use kernel passthrough to the cache file
    (Linux 6.9+, as root), so reads run at disk speed; the bytes are the same."""
    m = mount_factory(TEST_SET, replica)
    path = m.mountpoint / "level_slice.nc"
    first = path.read_bytes()
    before = m.stats()
    second = path.read_bytes()
    after = m.stats()
    assert second == first
    assert after["passthrough_opens"] == before["passthrough_opens"] + 1
    assert after["reads"] == before["reads"], "passthrough reads never reach the process"


def test_a_file_open_in_caching_mode_can_be_opened_again(replica, mount_factory):
    """The kernel refuses a passthrough open of an inode already open in caching mode; the
    mount must then open it normally (found by the 64-reader load test)."""
    m = mount_factory(TEST_SET, replica)
    path = m.mountpoint / "steps.nc"
    with open(path, "rb") as first:  # not built yet: a normal, caching-mode open
        data = first.read()
        with open(path, "rb") as second:  # built now, but the first is still open
            assert second.read() == data
    # Nothing open any more: passthrough. The kernel sends RELEASE after close() returns, so
    # the first opens may still count as open for a moment: retry (bounded).
    for _ in range(100):
        with open(path, "rb") as third:
            assert third.read() == data
        if m.stats()["passthrough_opens"] == 1:
            break
        time.sleep(0.02)
    assert m.stats()["passthrough_opens"] == 1


def test_unknown_names_are_enoent(replica, mount_factory):
    """Names: an unknown name is ENOENT; the directory itself cannot be read as a file."""
    m = mount_factory(TEST_SET, replica)
    with pytest.raises(FileNotFoundError):
        os.stat(m.mountpoint / "nope.nc")
    with pytest.raises(IsADirectoryError):
        open(m.mountpoint, "rb").read()


def test_extended_attributes_explain_a_file(replica, mount_factory, tmp_path):
    """xattrs: user.sodeda.deskriptor is the line, user.sodeda.cached says yes/no. Only the
    stable facts (deskriptor, identity, provenance) are listed, so `cp -a` and `rsync -aX`
    copy those and no state: a copy never says it is cached."""
    m = mount_factory(TEST_SET, replica)
    p = m.mountpoint / "steps.nc"
    line = next(l for l in LINES if '"steps"' in l)
    assert os.getxattr(p, "user.sodeda.deskriptor").decode() == line
    assert os.getxattr(p, "user.sodeda.cached") == b"no"
    p.read_bytes()
    assert os.getxattr(p, "user.sodeda.cached") == b"yes"
    stable = ["user.sodeda.deskriptor", "user.sodeda.identity", "user.sodeda.provenance"]
    assert sorted(os.listxattr(p)) == stable
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.sodeda.error")
    assert e.value.errno == errno.ENODATA
    out = subprocess.run(["getfattr", "-d", p], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "user.sodeda.deskriptor=" in out.stdout and "user.sodeda.cached" not in out.stdout
    for tool in (["cp", "-a"], ["rsync", "-aX"]):
        copy = tmp_path / f"{tool[0]}.nc"
        out = subprocess.run([*tool, p, copy], capture_output=True, text=True)
        assert out.returncode == 0, (tool, out.stderr)
        assert sorted(os.listxattr(copy)) == stable, tool
        assert os.getxattr(copy, "user.sodeda.deskriptor").decode() == line, tool


def test_selinux_labels_and_acls_are_not_supported_so_ls_asks_once(replica, mount_factory,
                                                                     tmp_path):
    """SEMANTICS.md, extended attributes: `security.*` and `system.*` are EOPNOTSUPP (no
    SELinux labels, no ACLs), which tells `ls -l` to stop asking each file for them; `ls -l`,
    `cp -a` and the user.sodeda.* attributes work as before."""
    m = mount_factory(TEST_SET, replica)
    p = m.mountpoint / "steps.nc"
    for name in ["security.selinux", "system.posix_acl_access", "system.posix_acl_default"]:
        with pytest.raises(OSError) as e:
            os.getxattr(p, name)
        assert e.value.errno == errno.EOPNOTSUPP, (name, e.value)
    with pytest.raises(OSError) as e:
        os.getxattr(m.mountpoint, "security.selinux")
    assert e.value.errno == errno.EOPNOTSUPP
    assert os.getxattr(p, "user.sodeda.cached") == b"no"
    # ls asks the first file only: strace sees one label and one ACL request for all files.
    trace = subprocess.run(["strace", "-f", "-e", "trace=getxattr,lgetxattr", "ls", "-l",
                            m.mountpoint], capture_output=True, text=True)
    assert trace.returncode == 0, trace.stderr
    files = len(os.listdir(m.mountpoint))
    assert files > 3
    asked = trace.stderr.count("security.selinux") + trace.stderr.count("posix_acl_access")
    assert 1 <= asked <= 2, trace.stderr
    out = subprocess.run(["cp", "-a", p, tmp_path / "copy.nc"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "copy.nc").read_bytes() == p.read_bytes()


def test_a_failed_flow_is_eio_with_the_cause_and_the_next_read_retries(
        replica, http_source, mount_factory):
    """Errors: a failed flow gives EIO for the reads of that open file, logged once with the
    file name and cause and shown in user.sodeda.error; the mount stays up and the next open
    retries."""
    m = mount_factory(TEST_SET, http_source.url)
    # exact_lists.nc reads 2m_temperature at 2023-01-01T18 (hour 1078218) and 2023-01-02T06.
    # A 4xx is not retried by the store, so the failure is immediate.
    p = m.mountpoint / "exact_lists.nc"
    http_source.fail = {"/2m_temperature/1078218": 403}
    with pytest.raises(OSError) as info:
        p.read_bytes()
    assert info.value.errno == errno.EIO
    cause = os.getxattr(p, "user.sodeda.error").decode()
    assert "2m_temperature" in cause and "403" in cause, cause
    assert "exact_lists.nc" in m.log.read_text()
    assert m.log.read_text().count("building failed") == 1
    assert sorted(os.listdir(m.mountpoint))  # still up
    http_source.fail = {}
    data = p.read_bytes()
    assert len(data) == os.stat(p).st_size
    with pytest.raises(OSError) as info:
        os.getxattr(p, "user.sodeda.error")
    assert info.value.errno == errno.ENODATA


def test_background_mode_returns_once_live_and_unmount_ends_it(replica, tmp_path):
    """Lifecycle: sodeda-mount returns once the mount is live (printing where it logs);
    `sodeda-era5 unmount` ends it and the process exits."""
    mnt = tmp_path / "bg"
    mnt.mkdir()
    env = clean_env()
    p = subprocess.run([str(mount_binary()), "--deskriptors", str(TEST_SET), "--source",
                        str(replica), "--cache", str(tmp_path / "cache"), str(mnt)],
                       capture_output=True, text=True, env=env, timeout=120)
    pid = None
    try:
        assert p.returncode == 0, p.stderr
        assert mounted_at(mnt)[1] == "sodeda-era5"
        assert "logging to" in p.stderr and "(pid " in p.stderr
        pid = int(p.stderr.split("(pid ")[1].split(")")[0])
        assert len(os.listdir(mnt)) == len(LINES)
        u = subprocess.run([str(ROOT / "target" / "debug" / "sodeda-era5"), "unmount", str(mnt)],
                           capture_output=True, text=True)
        assert u.returncode == 0, u.stderr
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or \
                    open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the mount process did not exit after unmount")
        assert mounted_at(mnt) is None
    finally:
        if mounted_at(mnt):
            subprocess.run(["umount", "-l", str(mnt)])
        if pid and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_unmounts(replica, mount_factory):
    """Lifecycle: SIGTERM (and SIGINT) unmount cleanly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        m = mount_factory(TEST_SET, replica, name=f"sig{int(sig)}")
        m.proc.send_signal(sig)
        assert m.proc.wait(timeout=20) == 0
        assert mounted_at(m.mountpoint) is None


def run_mount(*args, timeout=60):
    env = clean_env()
    return subprocess.run([str(mount_binary()), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_mount_failures_exit_nonzero_with_a_clear_message(replica, mount_factory, tmp_path):
    """Lifecycle: a missing or busy mount point, or a missing or all-bad deskriptors file,
    exits non-zero with a message naming the problem."""
    common = ["--source", replica, "--cache", tmp_path / "c", "--foreground"]
    p = run_mount("--deskriptors", TEST_SET, *common, tmp_path / "missing")
    assert p.returncode == 1 and "does not exist" in p.stderr
    m = mount_factory(TEST_SET, replica)
    p = run_mount("--deskriptors", TEST_SET, *common, m.mountpoint)
    assert p.returncode == 1 and "busy" in p.stderr, p.stderr
    (tmp_path / "empty").mkdir()
    p = run_mount("--deskriptors", tmp_path / "nope.jsonl", *common, tmp_path / "empty")
    assert p.returncode == 1 and "nope.jsonl" in p.stderr
    bad_only = tmp_path / "bad.jsonl"
    bad_only.write_text("{not json\n")
    p = run_mount("--deskriptors", bad_only, *common, tmp_path / "empty")
    assert p.returncode == 1 and "no valid deskriptor" in p.stderr, p.stderr
    assert mounted_at(tmp_path / "empty") is None


def undo_a_mount(point, p):
    """After a mount that should have been refused: detaches whatever it mounted at `point`
    and kills the process it said it started (`(pid N)` in its output)."""
    if mounted_at(point):
        subprocess.run(["umount", "-l", str(point)])
    if "(pid " in p.stderr:
        pid = int(p.stderr.split("(pid ")[1].split(")")[0])
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def test_durations_beyond_a_year_are_refused_before_mounting(replica, tmp_path):
    """Lifecycle: a duration option beyond one year (`--source-check-interval
    18446744073709551615`, which once panicked the signal thread) exits 2 naming the option,
    the value and the range, and mounts nothing."""
    mnt = tmp_path / "long"
    mnt.mkdir()
    for option, value in [("--source-check-interval", "18446744073709551615"),
                          ("--source-timeout", "1e15")]:
        p = run_mount("--deskriptors", TEST_SET, "--source", replica, "--cache",
                      tmp_path / "c", option, value, mnt)
        try:
            assert p.returncode == 2, (p.returncode, p.stderr)
            for part in (option, value, "one year"):
                assert part in p.stderr, (part, p.stderr)
            assert mounted_at(mnt) is None
        finally:
            undo_a_mount(mnt, p)


def test_a_mount_over_its_own_cache_log_or_deskriptors_is_refused(replica, tmp_path):
    """Lifecycle: the cache directory, the log file or the deskriptors file at or under the
    mount point (through a link too, and before the cache exists), or the mount point in the
    cache's own tree, exits 1 naming both paths, and mounts nothing."""
    mnt = tmp_path / "selfmnt"
    mnt.mkdir()
    (tmp_path / "link").symlink_to(mnt)
    shutil.copy(TEST_SET, mnt / "desk.jsonl")
    (tmp_path / "c").mkdir()
    subprocess.run([str(binary()), "--cache", str(tmp_path / "c"), "--source", str(replica),
                    "--deskriptors", str(TEST_SET), "list"], check=True, capture_output=True,
                   env=clean_env(), timeout=60)
    trees = [d for d in (tmp_path / "c").iterdir() if d.name.startswith("v")]
    assert len(trees) == 1, trees
    cache_tree = trees[0] / "tmp"
    assert cache_tree.is_dir()
    cases = [
        (mnt, ["--cache", mnt], "the cache directory"),
        (mnt, ["--cache", tmp_path / "link" / "not" / "yet"], "the cache directory"),
        (mnt, ["--cache", tmp_path / "c", "--log-file", mnt / "m.log"], "the log file"),
        (mnt, ["--cache", tmp_path / "c", "--deskriptors", mnt / "desk.jsonl"],
         "the deskriptors file"),
        (cache_tree, ["--cache", tmp_path / "c"], "the cache's own tree"),
    ]
    for point, extra, what in cases:
        if "--deskriptors" not in extra:
            extra = ["--deskriptors", TEST_SET, *extra]
        p = run_mount("--source", replica, *extra, point)
        try:
            assert p.returncode == 1, (extra, p.returncode, p.stderr)
            assert what in p.stderr and str(point.resolve()) in p.stderr, (extra, p.stderr)
            assert "mount elsewhere" in p.stderr, p.stderr
            assert mounted_at(point) is None
        finally:
            undo_a_mount(point, p)
    assert not (tmp_path / "link" / "not").exists(), "nothing is created under the mount point"


def test_a_stale_mount_of_a_killed_process_is_replaced(replica, mount_factory, tmp_path):
    """Lifecycle: after kill -9 of a mount, a new mount on the same point starts cleanly."""
    m = mount_factory(TEST_SET, replica, name="stale")
    m.proc.kill()
    m.proc.wait(timeout=10)
    with pytest.raises(OSError) as info:
        os.listdir(m.mountpoint)
    assert info.value.errno == errno.ENOTCONN
    m2 = mount_factory(TEST_SET, replica, name="stale")
    assert len(os.listdir(m2.mountpoint)) == len(LINES)
    assert "stale sodeda-era5 mount" in m2.log.read_text()


def test_reload_while_mounted(replica, mount_factory, tmp_path):
    """Reload: `sodeda-era5 reload` (or SIGHUP) re-reads the deskriptors file while mounted;
    files of removed lines vanish, new lines appear, open handles keep working; a file with
    no valid line keeps the current files."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join(LINES[:4]) + "\n")
    m = mount_factory(desk, replica)
    removed = json.loads(LINES[3])["name"] + ".nc"
    added = json.loads(LINES[4])["name"] + ".nc"
    Runner(replica, tmp_path / "c2", tmp_path)("get", "--deskriptors", TEST_SET, "--line", 4,
                                               "-o", tmp_path / "x.nc")
    expected = (tmp_path / "x.nc").read_bytes()
    era5 = str(ROOT / "target" / "debug" / "sodeda-era5")
    with open(m.mountpoint / removed, "rb") as f:
        head = f.read(100)
        desk.write_text("\n".join(LINES[:3] + [LINES[4]]) + "\n")
        p = subprocess.run([era5, "reload", str(m.mountpoint)], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert "ok: 4 files (1 added, 1 removed)" in p.stdout
        names = os.listdir(m.mountpoint)
        assert removed not in names and added in names
        with pytest.raises(FileNotFoundError):
            os.stat(m.mountpoint / removed)
        assert head + f.read() == expected, "an open handle keeps reading the removed file"
    assert len((m.mountpoint / added).read_bytes()) == os.stat(m.mountpoint / added).st_size

    desk.write_text("{not json\n")
    p = subprocess.run([era5, "reload", str(m.mountpoint)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "no valid deskriptor" in p.stderr, p.stderr
    assert sorted(os.listdir(m.mountpoint)) == sorted(names)
    desk.write_text("\n".join(LINES[:2]) + "\n")
    m.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(os.listdir(m.mountpoint)) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(m.mountpoint)) == 2


def _reload(mountpoint):
    era5 = str(ROOT / "target" / "debug" / "sodeda-era5")
    return subprocess.run([era5, "reload", str(mountpoint)], capture_output=True, text=True,
                          timeout=120)


def test_a_reload_of_an_emptied_file_keeps_the_current_files(replica, mount_factory, tmp_path):
    """Reload: a file with no line at all (emptied, or only blank lines) keeps the current
    files and `reload` exits 1 saying so; a good file reloads again."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join(LINES[:3]) + "\n")
    m = mount_factory(desk, replica)
    names = sorted(os.listdir(m.mountpoint))
    assert len(names) == 3
    for emptied in ("", "\n  \n\t\n"):
        desk.write_text(emptied)
        p = _reload(m.mountpoint)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert "empty" in p.stderr and "current files are kept" in p.stderr, p.stderr
        assert sorted(os.listdir(m.mountpoint)) == names
        assert len((m.mountpoint / names[0]).read_bytes()) == os.stat(
            m.mountpoint / names[0]).st_size
    desk.write_text("\n".join(LINES[:2]) + "\n")
    p = _reload(m.mountpoint)
    assert p.returncode == 0 and "ok: 2 files (0 added, 1 removed)" in p.stdout, p


def test_a_failed_reload_with_a_long_message_does_not_break_the_next(replica, mount_factory,
                                                                    tmp_path):
    """Reload: a refused file whose message is long (many long bad lines, a JSON array pasted
    instead of JSON lines) exits 1 with a readable, bounded message; the next reload works."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join(LINES[:2]) + "\n")
    m = mount_factory(desk, replica)
    bad = json.dumps({"name": "x" * 3000, "variable": "no_such_variable_" + "y" * 3000,
                      "time": "2023-01-01T00"})
    desk.write_text("\n".join([bad] * 40) + "\n")
    p = _reload(m.mountpoint)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "no valid deskriptor" in p.stderr and "more bad lines" in p.stderr, p.stderr[-2000:]
    assert 4096 < len(p.stderr) < 64 << 10, len(p.stderr)
    desk.write_text("[" + ",\n".join(LINES[:3]) + "]\n")
    p = _reload(m.mountpoint)
    assert p.returncode == 1 and "Numerical result" not in p.stderr, p.stderr[-2000:]
    desk.write_text("\n".join(LINES[:3]) + "\n")
    p = _reload(m.mountpoint)
    assert p.returncode == 0 and "ok: 3 files (1 added, 0 removed)" in p.stdout, p


def _ls_sizes(directory):
    """{name: size} from `ls -l` of a directory."""
    out = subprocess.run(["ls", "-l", str(directory)], capture_output=True, text=True,
                         check=True).stdout
    return {f[-1]: int(f[4]) for f in (l.split() for l in out.splitlines()[1:]) if len(f) >= 9}


def test_reload_is_seen_at_once_despite_the_kernel_caches(replica, mount_factory, tmp_path):
    """Reload: right after a reload (`sodeda-era5 reload` returns, or SIGHUP's result shows in
    user.sodeda.reload), a line whose selection changed has its new size in stat and ls -l
    and its new bytes in a read, a removed line's file is ENOENT and a new line's file is
    there, even though the kernel had cached the old names, sizes and a negative lookup."""
    from conftest import binary  # SODEDA_BIN: the same test runs on another build

    lines = {json.loads(l)["name"]: l for l in LINES if '"name"' in l}
    changed_v1 = lines["multi_hour"]
    changed_v2 = changed_v1.replace('"end": "2023-01-01T05:00"', '"end": "2023-01-01T02:00"')
    assert changed_v2 != changed_v1
    removed, added = lines["multi_variable"], lines["level_slice"]
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join([changed_v1, removed]) + "\n")

    # The expected files, built apart with `get`.
    direct = Runner(replica, tmp_path / "other-cache", tmp_path)
    (tmp_path / "v2.jsonl").write_text("\n".join([changed_v2, added]) + "\n")
    expected = {}
    for line, key in [(1, "changed_v2"), (2, "added")]:
        direct("get", "--deskriptors", tmp_path / "v2.jsonl", "--line", line,
               "-o", tmp_path / f"{key}.nc")
        expected[key] = (tmp_path / f"{key}.nc").read_bytes()

    m = mount_factory(desk, replica)
    mnt = m.mountpoint
    old = os.stat(mnt / "multi_hour.nc")
    assert old.st_size > len(expected["changed_v2"]), "the new selection is smaller"
    assert len((mnt / "multi_hour.nc").read_bytes()) == old.st_size
    assert _ls_sizes(mnt)["multi_hour.nc"] == old.st_size
    os.stat(mnt / "multi_variable.nc")
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "level_slice.nc")  # a negative lookup the kernel may remember

    desk.write_text("\n".join([changed_v2, added]) + "\n")
    p = subprocess.run([str(binary()), "reload", str(mnt)], capture_output=True, text=True,
                       timeout=120, env=clean_env())
    assert p.returncode == 0, p.stderr
    assert "ok: 2 files (1 added, 1 removed, 1 changed)" in p.stdout, p.stdout

    # At once: no waiting for the kernel's 60 s caches.
    new = os.stat(mnt / "multi_hour.nc")
    assert new.st_size == len(expected["changed_v2"]), (new.st_size, old.st_size)
    assert new.st_ino != old.st_ino
    with open(mnt / "multi_hour.nc", "rb") as f:
        assert f.read() == expected["changed_v2"]
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "multi_variable.nc")
    with pytest.raises(FileNotFoundError):
        open(mnt / "multi_variable.nc", "rb")
    assert os.stat(mnt / "level_slice.nc").st_size == len(expected["added"])
    assert (mnt / "level_slice.nc").read_bytes() == expected["added"]
    assert _ls_sizes(mnt) == {"multi_hour.nc": len(expected["changed_v2"]),
                              "level_slice.nc": len(expected["added"])}

    # Back to the first version by SIGHUP: the result is applied once user.sodeda.reload
    # counts it (at most 5 s), and then the old size and bytes are back at once.
    before = json.loads(os.getxattr(mnt, "user.sodeda.reload"))["reloads"]
    desk.write_text("\n".join([changed_v1, removed]) + "\n")
    m.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while json.loads(os.getxattr(mnt, "user.sodeda.reload"))["reloads"] == before:
        assert time.monotonic() < deadline, "SIGHUP's reload not applied within 5 s"
        time.sleep(0.02)
    last = json.loads(os.getxattr(mnt, "user.sodeda.reload"))["last"]
    assert last == "ok: 2 files (1 added, 1 removed, 1 changed)", last
    again = os.stat(mnt / "multi_hour.nc")
    assert (again.st_size, again.st_ino) == (old.st_size, old.st_ino), "the first inode is back"
    assert len((mnt / "multi_hour.nc").read_bytes()) == old.st_size
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "level_slice.nc")
    assert os.stat(mnt / "multi_variable.nc").st_size > 0


def _list_in_small_reads(directory, between, size=1024):
    """The names of `directory` read by getdents64 calls of `size` bytes, each from where the
    last ended, calling `between(calls)` after each call."""
    import ctypes
    import struct

    getdents64 = ctypes.CDLL(None, use_errno=True).getdents64
    getdents64.restype = ctypes.c_ssize_t
    buf = ctypes.create_string_buffer(size)
    names, calls = [], 0
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            got = getdents64(fd, buf, size)
            assert got >= 0, os.strerror(ctypes.get_errno())
            if got == 0:
                return [n for n in names if n not in (".", "..")]
            at = 0
            while at < got:
                reclen = struct.unpack_from("H", buf.raw, at + 16)[0]
                names.append(buf.raw[at + 19:at + reclen].split(b"\0")[0].decode())
                at += reclen
            calls += 1
            between(calls)
    finally:
        os.close(fd)


@pytest.mark.parametrize("prefix", ["", "d/"])
def test_a_listing_interrupted_by_reloads_gives_each_unchanged_file_once(replica, mount_factory,
                                                                         tmp_path, prefix):
    """Reload: directory offsets stay valid across a reload, so a listing that reloads
    interrupt lists every file present in both versions exactly once (files added or removed
    meanwhile may or may not appear), in the root and in a directory made by names with `/`.
    First deterministic (a reload between the kernel's pages of one listing, removing or
    restoring a block of other lines), then os.listdir in a loop while reloads run."""
    point = '"time": "2023-01-01T{h:02}:00", "latitude": 48, "longitude": 8, ' \
            '"variable": "2m_temperature"'

    def line(name, n):
        return '{"name": "%s%s", %s}' % (prefix, name, point.format(h=n % 24))

    block = [line(f"b{n:03}", n) for n in range(20)]
    kept = [line(f"f{n:04}", n) for n in range(1000)]
    kept_names = [f"f{n:04}.nc" for n in range(1000)]
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join(block + kept) + "\n")
    m = mount_factory(desk, replica)
    listed = m.mountpoint / prefix
    state = {"with_block": True}

    def reload():
        state["with_block"] = not state["with_block"]
        text = "\n".join((block if state["with_block"] else []) + kept) + "\n"
        (tmp_path / "next.jsonl").write_text(text)
        os.replace(tmp_path / "next.jsonl", desk)
        p = subprocess.run([str(binary()), "reload", str(m.mountpoint)], capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert p.returncode == 0, p.stderr

    def check(names, when):
        counts = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        missed = [n for n in kept_names if n not in counts]
        twice = [n for n in kept_names if counts.get(n, 0) > 1]
        assert not missed and not twice, \
            f"{when}: {len(missed)} missed ({missed[:3]}), {len(twice)} twice ({twice[:3]})"

    # getdents64 with a buffer of 1 KiB (some 30 entries): each call asks the mount from the
    # offset the previous call ended at; a reload between the first calls.
    names = _list_in_small_reads(listed, lambda calls: calls <= 4 and reload())
    check(names, "one listing across 4 reloads")

    # The probe's way: listings in a loop in one thread, reloads in another.
    done = threading.Event()
    listings = []

    def lister():
        while not done.is_set():
            listings.append(os.listdir(listed))

    thread = threading.Thread(target=lister)
    thread.start()
    try:
        for _ in range(4):
            reload()
            time.sleep(0.05)
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert listings
    for k, names in enumerate(listings):
        check(names, f"listing {k} of {len(listings)}")


def test_the_deskriptor_xattr_of_a_line_over_64_kib_is_a_note_not_e2big(replica, mount_factory,
                                                                      tmp_path):
    """Linux passes no xattr value over 64 KiB (E2BIG whatever the buffer): a longer line's
    `user.sodeda.deskriptor` is a short JSON note naming the line; short lines are as written."""
    import datetime
    t0 = datetime.datetime(2023, 1, 1)
    hours = [(t0 + datetime.timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M") for h in range(5000)]
    long_line = json.dumps({"name": "long", "time": hours, "latitude": 47, "longitude": 8,
                            "variable": "2m_temperature"})
    short_line = json.dumps({"name": "short", "time": "2023-01-01T00:00", "latitude": 47,
                             "longitude": 8, "variable": "2m_temperature"})
    assert len(long_line) > 65536
    deskriptors = tmp_path / "d.jsonl"
    deskriptors.write_text(short_line + "\n" + long_line + "\n")
    m = mount_factory(deskriptors, replica)
    note = json.loads(os.getxattr(m.mountpoint / "long.nc", "user.sodeda.deskriptor"))
    assert note["line"] == 2 and note["bytes"] == len(long_line)
    assert os.getxattr(m.mountpoint / "short.nc", "user.sodeda.deskriptor").decode() == short_line


def test_cold_reads_in_order_are_built_ahead_and_give_the_files_of_get(run, replica,
                                                                      mount_factory, tmp_path):
    """A reader going through the files in order finds the next ones being built (readahead);
    every file is still exactly the file of `get`."""
    lines = [json.dumps({"name": f"z{h:02d}", "time": f"2023-01-01T{h:02d}:00",
                         "latitude": {"start": 47.5, "end": 46.5},
                         "longitude": {"start": 8, "end": 9}, "variable": "2m_temperature"})
             for h in range(12)]
    deskriptors = tmp_path / "z.jsonl"
    deskriptors.write_text("\n".join(lines) + "\n")
    m = mount_factory(deskriptors, replica, extra=["--readahead", "4"])
    names = sorted(os.listdir(m.mountpoint))
    data = {n: (m.mountpoint / n).read_bytes() for n in names}
    stats = m.stats()
    assert stats["readahead_builds"] >= 4, stats
    assert stats["flow_runs"] == 12 and stats["flow_failures"] == 0, stats
    for line in (5, 12):
        run("get", "--deskriptors", deskriptors, "--line", line, "-o", tmp_path / "ref.nc")
        assert data[f"z{line - 1:02d}.nc"] == (tmp_path / "ref.nc").read_bytes()


def test_prefetch_keeps_a_window_of_the_jobs_order_built_ahead_of_the_reader(
        replica, mount_factory, tmp_path):
    """`sodeda-era5 prefetch MNT --order F`: the files of F are built a window ahead of the
    reader (followed through user.sodeda.last-read), in F's order, not the listing's."""
    lines = [json.dumps({"name": f"z{h:02d}", "time": f"2023-01-01T{h:02d}:00",
                         "latitude": 47, "longitude": 8, "variable": "2m_temperature"})
             for h in range(10)]
    deskriptors = tmp_path / "z.jsonl"
    deskriptors.write_text("\n".join(lines) + "\n")
    m = mount_factory(deskriptors, replica, extra=["--readahead", "0"])
    order = [f"z{h:02d}" for h in (9, 4, 7, 1, 8, 0, 2, 6, 3, 5)]
    (tmp_path / "order.txt").write_text("\n".join(order) + "\n")

    def cached(name):
        return os.getxattr(m.mountpoint / f"{name}.nc", "user.sodeda.cached") == b"yes"

    def wait_cached(names):
        deadline = time.monotonic() + 20
        while not all(cached(n) for n in names):
            assert time.monotonic() < deadline, [(n, cached(n)) for n in names]
            time.sleep(0.05)

    proc = subprocess.Popen([str(binary()), "prefetch", str(m.mountpoint), "--order",
                             str(tmp_path / "order.txt"), "--window", "3", "--idle", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        wait_cached(order[:3])
        time.sleep(0.5)
        assert not cached(order[3]), "no further than the window before the reader starts"
        assert m.stats()["flow_runs"] == 3
        (m.mountpoint / f"{order[0]}.nc").read_bytes()
        wait_cached(order[:4])  # the reader moved one: the window moves one
        for name in order[1:]:
            (m.mountpoint / f"{name}.nc").read_bytes()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "10 files in the order" in out, out
    stats = m.stats()
    assert stats["flow_runs"] == 10 and stats["flow_failures"] == 0, stats
