"""Mounts by a user other than root, as on clusters and shared workstations: with /dev/fuse
open to users (mode 0666, as on stock Debian) and fuse3 installed, the mount goes through
fusermount3; the user reads files, `sodeda-era5 unmount` ends it; without fusermount3 both
the mount and the unmount say to install fuse3.

The test creates a user, opens /dev/fuse to it, and restores both afterwards (it needs
root, which scripts/test has; elsewhere it is skipped)."""

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import binary, clean_env, mounted_at

USER = "sodeda-plain"
# One small file (one hour of a 2×2 box).
LINE = ('{"name": "plain", "time": "2023-01-01T05:00", "latitude": {"start": 48, "end": 47.5}, '
        '"longitude": {"start": 8, "end": 8.5}, "variable": "2m_temperature"}\n')

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a user: needs root")


@pytest.fixture
def plain_user():
    """A user without privileges, /dev/fuse open to it; both restored afterwards."""
    created = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True)
        created = True
    mode = os.stat("/dev/fuse").st_mode & 0o7777
    os.chmod("/dev/fuse", 0o666)
    work = Path(tempfile.mkdtemp(prefix="sodeda-plain-", dir="/tmp"))
    os.chmod(work, 0o755)
    entry = pwd.getpwnam(USER)
    for d in ("mnt", "cache"):
        (work / d).mkdir()
        os.chown(work / d, entry.pw_uid, entry.pw_gid)
    (work / "d.jsonl").write_text(LINE)
    os.chmod(work / "d.jsonl", 0o644)
    try:
        yield entry, work
    finally:
        mnt = work / "mnt"
        for _ in range(3):
            if not mounted_at(mnt):
                break
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        os.chmod("/dev/fuse", mode)
        shutil.rmtree(work, ignore_errors=True)
        if created:
            subprocess.run(["userdel", USER], capture_output=True)
    assert os.stat("/dev/fuse").st_mode & 0o7777 == mode


# Where fuser (and sodeda-era5) look for fusermount3 first: a helper that is not there
# stands for a machine without fuse3.
NO_HELPER = {"FUSERMOUNT_PATH": "/nonexistent/fusermount3"}


def as_user(argv, extra_env=None, timeout=120):
    """Runs `argv` as the plain user, in a minimal environment."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           **(extra_env or {})}
    return subprocess.run(["runuser", "-u", USER, "--", "/usr/bin/env", "-i",
                           *[f"{k}={v}" for k, v in env.items()], *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout)


def mount_as_user(work, replica, *extra, extra_env=None, timeout=120):
    """`sodeda-era5 mount` of the fixture's deskriptor, cache and mount point, as the user."""
    return as_user([binary(), "mount", *extra, "--deskriptors", work / "d.jsonl", "--source",
                    replica, "--cache", work / "cache", work / "mnt"], extra_env=extra_env,
                   timeout=timeout)


@contextlib.contextmanager
def user_mount(work, replica):
    """A background mount by the user: yields (its `mount` run, its pid); at the end the
    mount is detached and the process killed (by its pid) if they are still there."""
    m = mount_as_user(work, replica)
    assert m.returncode == 0, m.stderr
    pid = int(m.stderr.split("(pid ")[1].split(")")[0])
    try:
        yield m, pid
    finally:
        if mounted_at(work / "mnt"):
            subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pid, seconds=15):
    for _ in range(int(seconds * 10)):
        if not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            return True
        time.sleep(0.1)
    return False


def test_a_plain_user_mounts_reads_and_unmounts_through_fusermount3(plain_user, replica, tmp_path):
    if not shutil.which("fusermount3"):
        pytest.fail("fusermount3 is missing: scripts/install-deps installs fuse3")
    user, work = plain_user
    mnt, cache = work / "mnt", work / "cache"
    desk = work / "d.jsonl"
    name = "plain.nc"
    # What the file must be: `get` as root, with its own cache.
    want = tmp_path / "want.nc"
    subprocess.run([str(binary()), "get", "--deskriptors", str(desk), "--line", "1",
                    "--source", str(replica), "--cache", str(tmp_path / "c"), "-o", str(want)],
                   check=True, capture_output=True, env=clean_env())

    with user_mount(work, replica) as (m, pid):
        # fusermount3 names the type after the subtype: fuse.sodeda.
        fstype, source = mounted_at(mnt)
        assert fstype.startswith("fuse") and source == "sodeda-era5", (fstype, source)
        # The process and the mount are the user's, not root's.
        assert os.stat(f"/proc/{pid}").st_uid == user.pw_uid
        assert f"fusermount3 -u {mnt}" in m.stderr, m.stderr
        # Read twice (built, then from the user's cache), equal to `get`'s file.
        digest = hashlib.sha256(want.read_bytes()).hexdigest()
        for _ in range(2):
            r = as_user(["sha256sum", mnt / name])
            assert r.returncode == 0, r.stderr
            assert r.stdout.split()[0] == digest
        ls = as_user(["stat", "-c", "%s", mnt / name])
        assert int(ls.stdout) == want.stat().st_size
        assert list(cache.rglob("*.nc")), "the user's cache holds the file"
        assert all(p.stat().st_uid == user.pw_uid for p in cache.rglob("*"))

        # Without fusermount3, unmount says what to install; nothing changes.
        u = as_user([binary(), "unmount", mnt], extra_env=NO_HELPER)
        assert u.returncode != 0
        assert "fusermount3" in u.stderr and "install fuse3" in u.stderr, u.stderr
        assert mounted_at(mnt)

        u = as_user([binary(), "unmount", mnt])
        assert u.returncode == 0, u.stderr
        assert mounted_at(mnt) is None
        assert wait_gone(pid), "the mount process did not exit after unmount"


def test_a_plain_user_without_fusermount3_is_told_to_install_fuse3(plain_user, replica):
    user, work = plain_user
    m = mount_as_user(work, replica, "--foreground", extra_env=NO_HELPER, timeout=60)
    assert m.returncode != 0
    assert "fusermount3" in m.stderr and "install fuse3" in m.stderr, m.stderr
    assert mounted_at(work / "mnt") is None


def test_a_plain_users_mount_ends_on_sigterm_through_fusermount3(plain_user, replica):
    """SIGTERM to the user's mount process: it unmounts itself (umount(2) is refused to it;
    fusermount3 does it) and exits."""
    user, work = plain_user
    mnt = work / "mnt"
    with user_mount(work, replica) as (_, pid):
        assert mounted_at(mnt)
        os.kill(pid, signal.SIGTERM)
        assert wait_gone(pid), "the mount process did not exit on SIGTERM"
        assert mounted_at(mnt) is None, "it unmounted itself"
