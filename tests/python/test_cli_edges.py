"""The command line at its edges (issue 17): where `get -o` writes (devices, FIFOs, symbolic
links, standard output, modes), a closed standard output, the mount's "serving" line, and the
messages of an unreadable source directory, a mount refused for lack of permission and an
unreachable source."""

import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import DATA, binary, clean_env, mount_binary, mounted_at

TEST_SET = DATA / "test-set.jsonl"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def sodeda(replica, cache, *args, stdout=subprocess.PIPE, umask=None, cwd=None, timeout=300,
           prefix=()):
    """Runs sodeda-era5 over the replica; output as bytes."""
    env = clean_env()
    env.update({"SODEDA_SOURCE": str(replica), "LOCAL_CACHE": str(cache),
                "SODEDA_DESKRIPTORS": str(TEST_SET)})
    return subprocess.run([*prefix, str(binary()), *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=timeout,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.fixture
def get(replica, tmp_path):
    """`get --line N -o OUT` (stderr as text), checked."""
    def run(line, out, **kw):
        p = sodeda(replica, tmp_path / "cache", "get", "--line", line, "-o", out, **kw)
        assert p.returncode == 0, p.stderr.decode()
        return p
    return run


@pytest.fixture
def expected(get, tmp_path):
    """The bytes of the files of lines 1 and 2, written to a new regular file."""
    out = {}
    for line in (1, 2):
        get(line, tmp_path / f"expected-{line}.nc")
        out[line] = (tmp_path / f"expected-{line}.nc").read_bytes()
    assert out[1] != out[2] and out[1][:4] == b"CDF\x02"
    return out


def test_get_into_a_device_writes_into_it_and_leaves_it_a_device(get, tmp_path):
    """`get -o DEV` (root): the device node is written into, never renamed over: it is still
    the character device 1,3 (/dev/null) afterwards, with its mode."""
    dev = tmp_path / "null"
    subprocess.run(["mknod", "-m", "0666", str(dev), "c", "1", "3"], check=True)
    get(1, dev)
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode), oct(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sodeda-")]


def test_get_into_a_fifo_gives_its_reader_the_exact_bytes(get, expected, tmp_path):
    """`get -o FIFO`: the reader gets exactly the file's bytes; the FIFO stays a FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        get(1, fifo, timeout=120)
        reader.join(timeout=60)
    finally:
        if reader.is_alive():  # unblock the reader if get never opened the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [expected[1]]


def test_get_to_dash_writes_the_exact_bytes_to_standard_output(replica, expected, tmp_path):
    """`get -o -`: the file's exact bytes on standard output, and no file named `-`."""
    p = sodeda(replica, tmp_path / "cache", "get", "--line", 2, "-o", "-", cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == expected[2]
    assert not (tmp_path / "-").exists()
    assert "standard output" in p.stderr.decode()


def test_get_to_dev_stdout_or_an_open_descriptor_writes_into_it(replica, expected, tmp_path):
    """`-o /dev/stdout` (a pipe here) and `-o /dev/fd/N` write into that descriptor where it
    stands: after what the caller wrote before, never replacing what it points at."""
    p = sodeda(replica, tmp_path / "cache", "get", "--line", 2, "-o", "/dev/stdout",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == expected[2]
    out = tmp_path / "out.nc"
    with open(out, "wb") as f:
        f.write(b"header")
        f.flush()
        fd = f.fileno()
        q = subprocess.run([str(binary()), "get", "--line", "2", "-o", f"/dev/fd/{fd}"],
                           pass_fds=(fd,), capture_output=True, cwd=tmp_path,
                           env={**clean_env(), "SODEDA_SOURCE": str(replica),
                                "LOCAL_CACHE": str(tmp_path / "cache"),
                                "SODEDA_DESKRIPTORS": str(TEST_SET)})
    assert q.returncode == 0, q.stderr.decode()
    assert out.read_bytes() == b"header" + expected[2]


def test_get_through_a_symlink_replaces_its_target_and_keeps_the_link(get, expected, tmp_path):
    """`get -o LINK`: a link to a regular file stays a link and its target gets the new bytes
    (replaced atomically, keeping its mode); a link to a device writes into the device; a
    dangling link creates its target."""
    target = tmp_path / "target.nc"
    target.write_bytes(b"old")
    target.chmod(0o604)
    link = tmp_path / "link.nc"
    link.symlink_to("target.nc")
    get(1, link)
    assert link.is_symlink() and os.readlink(link) == "target.nc"
    assert target.read_bytes() == expected[1]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o604

    dev = tmp_path / "null"
    subprocess.run(["mknod", str(dev), "c", "1", "3"], check=True)
    to_dev = tmp_path / "to-null"
    to_dev.symlink_to(dev)
    get(1, to_dev)
    assert to_dev.is_symlink() and stat.S_ISCHR(os.lstat(dev).st_mode)

    dangling = tmp_path / "dangling.nc"
    dangling.symlink_to("sub/new.nc")
    (tmp_path / "sub").mkdir()
    get(2, dangling)
    assert dangling.is_symlink() and (tmp_path / "sub" / "new.nc").read_bytes() == expected[2]


def test_get_follows_the_umask_for_a_new_file_and_keeps_an_existing_files_mode(get, tmp_path):
    """A new file gets 0666 less the umask (not tempfile's 0600); a replaced regular file
    keeps its permission bits."""
    for umask, mode in [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)]:
        out = tmp_path / f"new-{umask:o}.nc"
        get(1, out, umask=umask)
        assert stat.S_IMODE(os.stat(out).st_mode) == mode, (oct(umask), oct(mode))
    existing = tmp_path / "existing.nc"
    existing.write_bytes(b"x")
    existing.chmod(0o640)
    get(1, existing, umask=0o022)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    assert existing.stat().st_size > 1


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["validate"], ["scope"],
                                     ["scope", "--json"]])
def test_a_closed_standard_output_ends_a_printing_command_quietly(replica, tmp_path, command):
    """`sodeda-era5 list | head -1` and the like: with standard output closed, the command
    ends silently (killed by SIGPIPE, as Unix filters are), not with "Broken pipe" or a
    panic on standard error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe fails: the reader is gone
    try:
        p = sodeda(replica, tmp_path / "cache", *command, stdout=write_end, timeout=120)
    finally:
        os.close(write_end)
    assert p.stderr.decode() == ""
    assert p.returncode in (0, -signal.SIGPIPE), p.returncode


def test_the_mount_says_it_is_serving_once_on_its_own_line(replica, tmp_path):
    """Background mount at log level info: the log has the "serving" line once, whole, on a
    line of its own; the terminal gets one line saying the mount is live."""
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    p = subprocess.run([str(mount_binary()), "--log-level", "info", "--deskriptors",
                        str(TEST_SET), "--source", str(replica), "--cache", str(cache),
                        str(mnt)], capture_output=True, text=True, env=clean_env(), timeout=120)
    pid = None
    try:
        assert p.returncode == 0, p.stderr
        pid = int(p.stderr.split("(pid ")[1].split(")")[0])
        # The line is written just after the mount is live: wait for it.
        log = cache / "sodeda-mount.log"
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log.read_text()
        assert text.count("serving") == 1, text
        serving = [line for line in text.splitlines() if "serving" in line]
        assert re.fullmatch(r"sodeda-mount: serving \d+ files at \S+ from \S+ \(pid \d+\)",
                            serving[0]), text
        assert p.stderr.count("serving") + p.stderr.count("mounted at") == 1, p.stderr
    finally:
        if mounted_at(mnt):
            subprocess.run(["umount", str(mnt)], capture_output=True)
        if mounted_at(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        if pid:
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def open_dir():
    """A directory every user can enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="sodeda-edges-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a command as user nobody")


@needs_root
def test_a_source_directory_out_of_reach_is_permission_denied(replica, open_dir):
    """A source directory behind a directory the user may not search (EACCES on stat) is
    reported as permission denied, not as missing."""
    private = open_dir / "private"
    (private / "data").mkdir(parents=True)
    private.chmod(0o700)
    p = sodeda(replica, open_dir / "cache", "scope", "--source", private / "data",
               cwd=open_dir, prefix=NOBODY, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "permission denied" in err.lower(), err
    assert "no such directory" not in err, err


@needs_root
def test_a_mount_refused_for_permissions_says_what_to_check(replica, open_dir):
    """sodeda-mount as a user who may not mount: the error names root, /dev/fuse's
    permissions and `user_allow_other` in /etc/fuse.conf; nothing is mounted."""
    mnt, cache = open_dir / "mnt", open_dir / "cache"
    mnt.mkdir()
    cache.mkdir()
    os.chown(cache, 65534, 65534)
    desk = open_dir / "d.jsonl"
    desk.write_bytes(TEST_SET.read_bytes())
    desk.chmod(0o644)
    try:
        for mode in (["--foreground"], []):
            p = subprocess.run([*NOBODY, str(mount_binary()), *mode, "--deskriptors", str(desk),
                                "--source", str(replica), "--cache", str(cache), str(mnt)],
                               capture_output=True, text=True, env=clean_env(), cwd=open_dir,
                               timeout=120)
            assert p.returncode == 1, p.stderr
            assert "cannot mount at" in p.stderr, p.stderr
            hint = p.stderr[p.stderr.index("hint:"):]
            for part in ["root", "/dev/fuse", "user_allow_other", "/etc/fuse.conf"]:
                assert part in hint, (part, p.stderr)
            assert mounted_at(mnt) is None
    finally:
        if mounted_at(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("source,cause", [
    ("https://nonexistent.invalid/x.zarr", "dns error"),
    (f"http://127.0.0.1:{closed_port()}/x.zarr", "Connection refused"),
])
def test_an_unreachable_source_is_said_shortly_with_its_cause_once(replica, tmp_path, source,
                                                                   cause):
    """An unreachable source: one short message, the cause first and once (not object_store's
    "Error performing GET …" repeated four times before it), then the request."""
    p = sodeda(replica, tmp_path / "cache", "scope", "--source", source, "--source-retries",
               "1", "--source-timeout", "5", timeout=120)
    err = p.stderr.decode().strip()
    assert p.returncode == 1, err
    assert err.startswith(f"error: cannot reach the source {source}: "), err
    assert len(err) < 400, err
    assert err.count(cause) == 1, err
    assert err.count("GET") == 1 and "Error performing" not in err, err
    assert "after 1 retry" in err, err
