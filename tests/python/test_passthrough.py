"""Kernel passthrough and what is guaranteed under it (docs/SEMANTICS.md, "Passthrough").

A built file opened in passthrough mode is read by the kernel straight from its cache entry,
so the mount seals the entry (immutable) while the kernel reads it: nobody, root included,
can change it in place meanwhile, and new opens of the file keep working whatever another
process does to the cache."""
import errno
import fcntl
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DATA, FORMAT_DIR, Runner

TEST_SET = DATA / "test-set.jsonl"
FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x10


def sealed(path):
    """Whether the file at `path` is immutable (chattr +i)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
    finally:
        os.close(fd)
    return bool(flags & FS_IMMUTABLE_FL)


def unseal_all(cache):
    """Lifts every seal under `cache` (teardown: leave nothing the test runner cannot remove)."""
    for p in Path(cache).rglob("*.nc"):
        if p.is_file() and not p.is_symlink():
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


def entry_of(mountpoint, name, cache):
    identity = os.getxattr(mountpoint / name, "user.sodeda.identity").decode()
    return Path(cache) / FORMAT_DIR / identity[:2] / f"{identity}.nc"


def open_in_passthrough(m, path):
    """Opens `path` once no earlier handle of it is left in caching mode (the kernel sends
    RELEASE after close() returns): the open that counts as a passthrough open. Bounded."""
    for _ in range(200):
        before = m.stats()["passthrough_opens"]
        f = open(path, "rb")
        if m.stats()["passthrough_opens"] == before + 1:
            return f
        f.close()
        time.sleep(0.02)
    raise AssertionError("no passthrough open (kernel without FUSE passthrough?)")


def wait_unsealed(entry):
    for _ in range(250):
        if not sealed(entry):
            return
        time.sleep(0.02)
    raise AssertionError(f"{entry} still sealed after its last handle was closed")


@pytest.fixture
def built(replica, mount_factory, tmp_path):
    """A mount over a cache of its own with `level_slice.nc` built: (mount, path, bytes,
    cache entry). Every seal under the cache is lifted at teardown."""
    cache = tmp_path / "cache"
    try:
        m = mount_factory(TEST_SET, replica, cache=cache)
        path = m.mountpoint / "level_slice.nc"
        good = path.read_bytes()
        yield m, path, good, entry_of(m.mountpoint, "level_slice.nc", cache)
    finally:
        unseal_all(cache)


def test_a_held_passthrough_file_cannot_be_changed_and_new_opens_keep_working(
        built, replica, tmp_path):
    """Findings 1 and 2 of issue 25: with a file held open in passthrough, deleting,
    truncating or writing its entry is refused (EPERM, also for root), the held handle reads
    the right bytes, new opens are served (never EIO), an evicting preload on the same cache
    leaves the entry; once the last handle closes the seal is lifted."""
    m, path, good, entry = built
    cache = tmp_path / "cache"
    with open_in_passthrough(m, path) as held:
        assert sealed(entry)
        with pytest.raises(PermissionError):
            os.truncate(entry, 1000)
        with pytest.raises(PermissionError):
            open(entry, "r+b")
        with pytest.raises(PermissionError):
            os.unlink(entry)
        assert entry.stat().st_size == len(good)
        assert held.read() == good
        # Another process bounding the same cache: the held entry stays.
        run = Runner(replica, cache, tmp_path)
        run("preload", "--deskriptors", TEST_SET, "--cache-max-size", "1K")
        assert entry.exists()
        errors = m.stats()["read_errors"]
        for _ in range(5):
            assert path.read_bytes() == good, "new opens while one is held"
        assert m.stats()["read_errors"] == errors
        held.seek(0)
        assert held.read() == good
    wait_unsealed(entry)
    os.unlink(entry)  # an ordinary file again
    assert path.read_bytes() == good, "made again after its entry was removed"


def test_a_seal_left_by_a_killed_mount_is_lifted_by_the_next_eviction(
        built, replica, tmp_path):
    """A mount killed (-9) while the kernel reads an entry leaves it sealed; its lock went
    with the process, so the next bounded cache on it lifts the seal and evicts it."""
    m, path, _, entry = built
    cache = tmp_path / "cache"
    held = open_in_passthrough(m, path)
    assert sealed(entry)
    m.proc.kill()
    m.proc.wait(timeout=15)
    try:
        held.close()
    except OSError:
        pass  # ENOTCONN: the file system process is gone
    m.stop()
    assert sealed(entry), "the killed mount could not lift its seal"
    run = Runner(replica, cache, tmp_path)
    run("preload", "--deskriptors", TEST_SET, "--cache-max-size", "1K")
    assert not entry.exists() or not sealed(entry)


def test_an_entry_unsealed_on_purpose_and_damaged_is_not_served_to_new_opens(built):
    """Only a deliberate `chattr -i` lifts a seal; if the entry is then changed while the
    kernel still holds it, new opens fail (EIO: the kernel allows new opens of the inode only
    on that same entry) rather than get its bytes; once the handles are closed, the file is
    made again."""
    m, path, good, entry = built
    with open_in_passthrough(m, path):
        subprocess.run(["chattr", "-i", str(entry)], check=True)
        with open(entry, "r+b") as w:
            w.seek(len(good) // 2)
            w.write(bytes([good[len(good) // 2] ^ 0xFF]))
        for _ in range(3):
            with pytest.raises(OSError) as e:
                path.read_bytes()
            assert e.value.errno == errno.EIO
    for _ in range(250):
        try:
            assert path.read_bytes() == good
            break
        except OSError:
            time.sleep(0.02)  # the kernel's RELEASE of the held handle is on its way
    assert path.read_bytes() == good
