"""Directories for big sets, for real: names with `/` and `--layout` through a FUSE mount, read
with find, ls -R, cp -r and xarray; reload keeps directories stable and is seen at once."""

import json
import os
import subprocess

import pytest
import xarray as xr

from conftest import ROOT, Runner

ZURICH = ('"time": "2023-01-01T{h:02}:00", "latitude": {{"start": 48, "end": 47}}, '
          '"longitude": {{"start": 8, "end": 9}}, "variable": "2m_temperature"')


def line(hour, name=None):
    body = ZURICH.format(h=hour)
    return "{" + (f'"name": "{name}", ' if name else "") + body + "}"


def test_names_with_slashes_and_a_layout_make_a_tree(replica, mount_factory, tmp_path):
    """DESKRIPTORS.md (directories): named files go where their name says, unnamed ones where
    --layout says; find, ls -R, cp -r and xarray see the tree; each file equals `get`."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join([
        line(1, "t2m/2023/01/zurich-01"),
        line(2, "t2m/2023/01/zurich-02"),
        line(3, "top"),
        line(4),  # unnamed: placed by --layout
    ]) + "\n")
    layout = ("--layout", "by-{variable}/{year}-{month}")
    run = Runner(replica, tmp_path / "c", tmp_path)
    listed = run.list(desk, *layout)
    names = [e["name"] for e in listed]
    assert names[:3] == ["t2m/2023/01/zurich-01.nc", "t2m/2023/01/zurich-02.nc", "top.nc"]
    assert names[3].startswith("by-2m_temperature/2023-01/2m_temperature_20230101T04_"), names

    m = mount_factory(desk, replica, extra=layout)
    found = subprocess.run(["find", ".", "-type", "f"], cwd=m.mountpoint, capture_output=True,
                           text=True, check=True).stdout.split()
    assert sorted(found) == sorted("./" + n for n in names)
    dirs = subprocess.run(["find", ".", "-type", "d"], cwd=m.mountpoint, capture_output=True,
                          text=True, check=True).stdout.split()
    assert sorted(dirs) == [".", "./by-2m_temperature", "./by-2m_temperature/2023-01", "./t2m",
                            "./t2m/2023", "./t2m/2023/01"]
    ls = subprocess.run(["ls", "-R", "-l"], cwd=m.mountpoint, capture_output=True, text=True,
                        check=True).stdout
    assert "./t2m/2023/01:" in ls and "zurich-02.nc" in ls
    for e in listed:
        assert os.stat(m.mountpoint / e["name"]).st_size == e["size"], e["name"]
    assert os.stat(m.mountpoint / "t2m").st_mode & 0o777 == 0o555

    # cp -r of the tree; each file equals `get` of its line.
    subprocess.run(["cp", "-r", f"{m.mountpoint}/", str(tmp_path / "copy")], check=True)
    for e in listed:
        run("get", "--deskriptors", desk, "--line", e["line"], "-o", tmp_path / "g.nc", *layout)
        assert (tmp_path / "copy" / e["name"]).read_bytes() == (tmp_path / "g.nc").read_bytes()
    with xr.open_dataset(m.mountpoint / "t2m/2023/01/zurich-02.nc", engine="netcdf4") as ds:
        assert ds["2m_temperature"].shape == (1, 5, 5)

    # Not a file, not a directory: the errnos a shell expects.
    with pytest.raises(IsADirectoryError):
        open(m.mountpoint / "t2m", "rb")
    with pytest.raises(NotADirectoryError):
        os.stat(m.mountpoint / "top.nc" / "x")
    with pytest.raises(FileNotFoundError):
        os.stat(m.mountpoint / "t2m" / "2024")


def test_reload_keeps_directories_and_shows_new_ones_at_once(replica, mount_factory, tmp_path):
    """Reload with directories: a directory keeps its inode; one whose last file goes vanishes;
    a new one shows at once, though the kernel had cached its absence."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join([line(1, "a/x/one"), line(2, "b/two")]) + "\n")
    m = mount_factory(desk, replica)
    a_ino = os.stat(m.mountpoint / "a").st_ino
    x_ino = os.stat(m.mountpoint / "a" / "x").st_ino
    with pytest.raises(FileNotFoundError):
        os.stat(m.mountpoint / "c")  # a negative entry the kernel keeps
    desk.write_text("\n".join([line(1, "a/x/one"), line(3, "a/x/three"),
                               line(4, "c/d/four")]) + "\n")
    era5 = str(ROOT / "target" / "debug" / "sodeda-era5")
    p = subprocess.run([era5, "reload", str(m.mountpoint)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ok: 3 files (2 added, 1 removed)" in p.stdout, p.stdout
    assert os.stat(m.mountpoint / "a").st_ino == a_ino
    assert os.stat(m.mountpoint / "a" / "x").st_ino == x_ino
    assert sorted(os.listdir(m.mountpoint / "a" / "x")) == ["one.nc", "three.nc"]
    assert os.listdir(m.mountpoint / "c" / "d") == ["four.nc"]
    with pytest.raises(FileNotFoundError):
        os.stat(m.mountpoint / "b")
    assert sorted(os.listdir(m.mountpoint)) == ["a", "c"]
    size = os.stat(m.mountpoint / "c" / "d" / "four.nc").st_size
    assert len((m.mountpoint / "c" / "d" / "four.nc").read_bytes()) == size


def test_bad_paths_and_clashes_name_the_line(run, tmp_path):
    """Bad input: a path with an empty or dot segment, or a file that is also a directory,
    is refused with its line, field and value; the other lines stay."""
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join([
        line(1, "ok/one"),
        line(2, "a//b"),
        line(3, "ok/./c"),
        line(4, "ok"),
        line(5, "ok/one.nc/x"),
    ]) + "\n")
    p = run("validate", "--deskriptors", desk, check=False)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert "line 2" in err and "`//`" in err, err
    assert "line 3" in err and "`.` segment" in err, err
    assert "line 5" in err and "is the file of line 1" in err, err
    assert "line 4" not in err, "ok.nc is a file beside the directory ok"
    names = [e["name"] for e in run.list(desk)]
    assert names == ["ok/one.nc", "ok.nc"]
    p = run("list", "--deskriptors", desk, "--layout", "{decade}", check=False)
    assert p.returncode != 0 and "`{decade}` is not a field" in p.stderr, p.stderr
