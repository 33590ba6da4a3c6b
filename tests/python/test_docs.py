"""The README's examples run as written, against the test replica and the shipped
deskriptors.jsonl: the quick start (mount, ls -l, xarray on zurich.nc, umount) and every
command of the "Use" block, with /mnt/era5 replaced by a temporary mount point. Two lines
are not run: `sodeda-era5 dashboard` (a server; tests/python/test_dashboard.py drives it) and
`sodeda-era5 prefetch` (it follows a reader until it stays idle for ten minutes;
test_mount.py drives it). Every full deskriptor shown in README.md and docs/ is valid."""

import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, binary, clean_env, mount_binary, mounted_at

README = ROOT / "README.md"
NOT_RUN = {"dashboard", "prefetch"}


def code_blocks(path, lang="sh"):
    """The lines of every ```lang block of a Markdown file, block by block."""
    blocks, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None and line[3:].strip() == lang:
                current = []
            elif current is not None:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def command(line):
    """A README line as argv: its trailing `# comment` dropped (quoted text kept whole)."""
    return shlex.split(line, comments=True)


@pytest.fixture
def site(replica, tmp_path):
    """A working directory holding the shipped deskriptors.jsonl, the environment the README
    assumes (the source and cache given once, as in a .env), and a mount point that is
    unmounted at the end whatever happens."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "deskriptors.jsonl", work / "deskriptors.jsonl")
    mnt = tmp_path / "era5"
    env = clean_env()
    env.update({"SODEDA_SOURCE": str(replica), "LOCAL_CACHE": str(tmp_path / "cache")})
    programs = {"sodeda-era5": str(binary()), "sodeda-mount": str(mount_binary()),
                "python": sys.executable}

    def run(line, check=True):
        argv = command(line.replace("/mnt/era5", str(mnt)))
        argv[0] = programs.get(argv[0], argv[0])
        p = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert p.returncode == 0, f"{line}\nexit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    run.work, run.mnt = work, mnt
    try:
        yield run
    finally:
        for _ in range(3):
            if not mounted_at(mnt):
                break
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_the_quick_start_runs_as_written(site):
    (block,) = [b for b in code_blocks(README) if b and b[0].startswith("sodeda-mount")][:1]
    site.mnt.mkdir()
    outputs = [site(line) for line in block]
    assert "zurich.nc" in outputs[1].stdout, "ls -l lists the named file"
    assert "2m_temperature" in outputs[2].stdout, "xarray opened zurich.nc"
    assert not mounted_at(site.mnt)


def test_every_command_of_the_use_block_runs_as_written(site):
    block = next(b for b in code_blocks(README) if any("sodeda-era5 validate" in l for l in b))
    site.mnt.mkdir()
    ran = []
    for line in block:
        argv = command(line)
        if argv[0] == "sodeda-era5" and argv[1] in NOT_RUN:
            continue
        if argv[0] == "sodeda-mount" and mounted_at(site.mnt):
            site("sodeda-era5 unmount /mnt/era5")
        if argv[0] != "sodeda-mount" and "/mnt/era5" in line and not mounted_at(site.mnt):
            site("sodeda-mount /mnt/era5")
        ran.append((line, site(line)))

    def output(start):
        return next(p.stdout for line, p in ran if line.startswith(start))

    assert len(ran) == len(block) - len(NOT_RUN), [r[0] for r in ran]
    assert (site.work / "zurich.nc").stat().st_size > 0
    assert (site.work / "globe.nc").read_bytes()[:3] == b"CDF"
    assert "2 deskriptors, all valid" in output("sodeda-era5 validate")
    assert "zurich.nc" in output("sodeda-era5 list")
    assert "last_time" in output("getfattr"), "the provenance of zurich.nc"
    assert "flow_runs" in output("sodeda-era5 status")
    if mounted_at(site.mnt):
        site("sodeda-era5 unmount /mnt/era5")


def full_deskriptors(path):
    """Every line of a Markdown file that is a whole deskriptor as JSON."""
    out = []
    for line in path.read_text().splitlines():
        for text in re.findall(r"(\{.*\"variable\".*\})", line):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "variable" in value:
                out.append(text)
    return out


def test_every_deskriptor_shown_in_the_docs_is_valid(site):
    lines = [d for p in [README, *sorted((ROOT / "docs").glob("*.md"))]
             for d in full_deskriptors(p)]
    assert len(lines) >= 2, lines
    path = site.work / "docs.jsonl"
    # Names made unique: several examples select the same data.
    named = []
    for i, text in enumerate(lines):
        value = json.loads(text)
        value["name"] = f"example_{i}"
        named.append(json.dumps(value))
    path.write_text("\n".join(named) + "\n")
    p = site(f"sodeda-era5 validate --deskriptors {path}", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{len(lines)} deskriptors, all valid" in p.stdout
