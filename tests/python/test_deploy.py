"""Operations: the fstab line and the systemd unit of docs/DEPLOYMENT.md, run as written (only
the paths changed) through mount(8) and the `mount.sodeda` helper; `status`; log settings.

mount(8) looks for helpers in /sbin only, so the tests link /sbin/mount.sodeda to the binary
under test for their duration (and restore whatever was there).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DATA, ROOT, Dashboard, clean_env, mount_binary, mounted_at

DOC = ROOT / "docs" / "DEPLOYMENT.md"
HELPER = Path("/sbin/mount.sodeda")
TEST_SET = DATA / "test-set.jsonl"


def doc_block(lang, first_line=None):
    text = DOC.read_text()
    for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S):
        block = m.group(1)
        if first_line is None or block.startswith(first_line):
            return block
    raise AssertionError(f"no ```{lang} block starting {first_line!r} in {DOC}")


@pytest.fixture
def helper():
    """/sbin/mount.sodeda → the sodeda-mount under test, for the test's duration."""
    saved = None
    if HELPER.is_symlink() or HELPER.exists():
        saved = HELPER.with_name(".mount.sodeda.saved-by-tests")
        assert not (saved.exists() or saved.is_symlink()), \
            f"{saved} exists: an earlier test run was killed; restore it to {HELPER} by hand"
        HELPER.rename(saved)
    HELPER.symlink_to(mount_binary().resolve())
    try:
        yield HELPER
    finally:
        HELPER.unlink()
        if saved:
            saved.rename(HELPER)


class Site:
    """The doc's paths, moved into a temporary directory."""

    def __init__(self, tmp_path, replica):
        self.deskriptors = tmp_path / "deskriptors.jsonl"
        shutil.copy(TEST_SET, self.deskriptors)
        self.mnt = tmp_path / "mnt"
        self.mnt.mkdir()
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "sodeda-mount.log"
        self.env_file = tmp_path / "sodeda.env"
        self.env_file.write_text(f"SODEDA_SOURCE={replica}\nSODEDA_LOG=info\n")

    def rewrite(self, text):
        for old, new in (("/etc/sodeda/deskriptors.jsonl", self.deskriptors),
                         ("/etc/sodeda/sodeda.env", self.env_file),
                         ("/var/cache/sodeda", self.cache),
                         ("/var/log/sodeda-mount.log", self.log),
                         ("/mnt/era5", self.mnt)):
            text = text.replace(old, str(new))
        return text

    def stop(self):
        """Unmounts and waits for the background mount process to end (by its PID)."""
        if not mounted_at(self.mnt):
            return
        pid = int(os.getxattr(self.mnt, "user.sodeda.pid"))
        subprocess.run(["umount", str(self.mnt)], check=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def site(tmp_path, replica):
    s = Site(tmp_path, replica)
    try:
        yield s
    finally:
        try:
            s.stop()
        finally:
            if mounted_at(s.mnt):
                subprocess.run(["umount", "-l", str(s.mnt)], capture_output=True)


def assert_serves_the_test_set(site, run):
    assert mounted_at(site.mnt) == ("fuse", "sodeda-era5")
    listed = {f["name"]: f["size"] for f in run.list(TEST_SET)}
    on_disk = {p.name: p.stat().st_size for p in site.mnt.iterdir()}
    assert on_disk == listed
    data = (site.mnt / "multi_hour.nc").read_bytes()
    assert data[:3] == b"CDF" and len(data) == listed["multi_hour.nc"]
    # The env file's settings reached the mount process: its source and its log level.
    assert any(site.cache.rglob("*.nc"))
    assert "INFO" in site.log.read_text()


def test_the_fstab_line_mounts_with_mount_8(helper, site, run, tmp_path):
    line = doc_block("fstab").strip()
    fields = line.split()
    assert fields[2] == "sodeda" and len(fields) == 6, line
    assert line in (ROOT / "README.md").read_text(), "README shows the same fstab line"
    fstab = tmp_path / "fstab"
    fstab.write_text(site.rewrite(line) + "\n")
    p = subprocess.run(["mount", "-T", str(fstab), str(site.mnt)], capture_output=True,
                       text=True, env=clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert_serves_the_test_set(site, run)
    site.stop()  # umount, then wait for the mount process to end
    assert mounted_at(site.mnt) is None


def test_the_systemd_unit_verifies_and_mounts_as_systemd_would(helper, site, run, tmp_path):
    unit_text = doc_block("ini", "# /etc/systemd/system/mnt-era5.mount")
    unit = tmp_path / "mnt-era5.mount"
    unit.write_text(unit_text)
    if shutil.which("systemd-analyze"):
        p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    mount = dict(re.findall(r"^(What|Where|Type|Options)=(.*)$", unit_text, re.M))
    assert mount["Where"] == "/mnt/era5" and mount["Type"] == "sodeda"
    # What systemd runs for a mount unit: mount What Where -t Type -o Options.
    p = subprocess.run(["mount", site.rewrite(mount["What"]), site.rewrite(mount["Where"]),
                        "-t", mount["Type"], "-o", site.rewrite(mount["Options"])],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert_serves_the_test_set(site, run)


def test_helper_errors_and_fake_mounts(helper, site):
    base = [str(helper), str(site.deskriptors), str(site.mnt)]
    p = subprocess.run([*base, "-o", f"cahce={site.cache}"], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert p.returncode == 1 and '"cahce=' in p.stderr and "cache=…" in p.stderr, p.stderr
    assert mounted_at(site.mnt) is None
    p = subprocess.run([*base, "-f", "-o", "ro,_netdev"], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    assert mounted_at(site.mnt) is None
    p = subprocess.run([*base, "-o", f"env_file={site.env_file}.missing"],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert p.returncode == 1 and "env_file" in p.stderr, p.stderr
    # Through mount(8), the helper's error reaches the user.
    p = subprocess.run(["mount", "-t", "sodeda", "-o", "bogus=1", str(site.deskriptors),
                        str(site.mnt)], capture_output=True, text=True, env=clean_env(),
                       timeout=60)
    assert p.returncode != 0 and "bogus=1" in p.stderr, p.stderr
    assert mounted_at(site.mnt) is None


def test_status_reports_the_mount_counters(mount_factory, replica, run, tmp_path):
    m = mount_factory(TEST_SET, replica)
    data = (m.mountpoint / "multi_hour.nc").read_bytes()
    (m.mountpoint / "multi_hour.nc").read_bytes()
    p = run("status", m.mountpoint, "--json")
    stats = json.loads(p.stdout)
    assert stats["flow_runs"] == 1 and stats["flow_failures"] == 0
    assert stats["source_bytes"] > 0 and stats["source_requests"] > 0
    assert stats["read_errors"] == 0 and stats["files"] == 17
    assert stats["reads"] + stats["passthrough_opens"] >= 1
    assert stats["bytes_read"] <= 2 * len(data)
    text = run("status", m.mountpoint).stdout
    assert re.search(r"^\s+flow_runs\s+1\s+files built from the source$", text, re.M), text
    assert re.search(r"^\s+source_bytes\s+\d+\s+bytes fetched from the source", text, re.M)
    p = run("status", tmp_path, check=False)
    assert p.returncode == 1 and "is not a sodeda-era5 mount" in p.stderr


def test_the_dashboard_logs_to_its_log_file(replica, tmp_path):
    log = tmp_path / "dash.log"
    d = Dashboard(replica, tmp_path / "cache", TEST_SET, tmp_path / "stderr.log",
                  extra=("--log-file", log), log_level="debug")
    try:
        status, _, _ = d.get("/?file=multi_hour.nc")
        assert status == 200
    finally:
        d.stop()
    assert d.proc.returncode == 0
    text = log.read_text()
    assert "DEBUG" in text and "built file=multi_hour.nc" in text, text[-2000:]
    assert "DEBUG" not in (tmp_path / "stderr.log").read_text()


def test_a_copied_helper_mounts_in_the_background(site, run, tmp_path):
    # Installed as a copy (or a hard link) rather than a symlink, the helper's background
    # process must still start as sodeda-mount, not as a second helper.
    copy = tmp_path / "bin" / "mount.sodeda"
    copy.parent.mkdir()
    shutil.copy(mount_binary(), copy)
    p = subprocess.run([str(copy), str(site.deskriptors), str(site.mnt), "-o",
                        site.rewrite("ro,cache=/var/cache/sodeda,env_file=/etc/sodeda/sodeda.env,"
                                     "log_file=/var/log/sodeda-mount.log")],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr + site.log.read_text()
    assert_serves_the_test_set(site, run)
