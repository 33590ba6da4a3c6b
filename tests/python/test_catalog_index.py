"""The catalog kept on disk (src/catalog/index.rs): a mount of an unchanged deskriptors file reads
its catalog back instead of planning it, and never serves a stale one: a changed file (even
of the same size and mtime), a damaged index and a symlinked index directory are all handled."""

import json
import os

from conftest import DATA, FORMAT_DIR, read_lines

LINES = read_lines(DATA / "test-set.jsonl")


def indexes(cache):
    d = cache / FORMAT_DIR / "catalogs"
    return sorted(p.name for p in d.glob("*.idx")) if d.is_dir() else []


def names_of(m):
    return sorted(os.listdir(m.mountpoint))


def test_an_unchanged_file_is_read_back_and_a_changed_one_never(replica, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    desk = tmp_path / "desk.jsonl"
    named = [l for l in LINES if '"name"' in l][:3]
    desk.write_text("\n".join(named) + "\n")
    first = mount_factory(desk, replica, cache=cache, name="m1")
    before = names_of(first)
    first.stop()
    kept = indexes(cache)
    assert len(kept) == 1, kept

    # The same file again: the same index, the same files.
    again = mount_factory(desk, replica, cache=cache, name="m2")
    assert names_of(again) == before
    again.stop()
    assert indexes(cache) == kept

    # Another name of the same length, mtime put back: the content decides, not the stat.
    st = desk.stat()
    old = json.loads(named[0])["name"]
    new = old[:-1] + ("x" if old[-1] != "x" else "y")
    desk.write_text(desk.read_text().replace(f'"{old}"', f'"{new}"', 1))
    assert desk.stat().st_size == st.st_size
    os.utime(desk, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = mount_factory(desk, replica, cache=cache, name="m3")
    assert f"{new}.nc" in names_of(changed) and f"{old}.nc" not in names_of(changed)
    changed.stop()
    assert len(indexes(cache)) == 2

    # A damaged index is ignored (the catalog is planned again) and replaced.
    for name in indexes(cache):
        p = cache / FORMAT_DIR / "catalogs" / name
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    damaged = mount_factory(desk, replica, cache=cache, name="m4")
    assert f"{new}.nc" in names_of(damaged)
    damaged.stop()
    assert "ignoring the damaged catalog index" in damaged.log.read_text()


def test_a_symlinked_index_directory_is_not_followed(replica, mount_factory, tmp_path):
    cache = tmp_path / "cache"
    desk = tmp_path / "desk.jsonl"
    desk.write_text("\n".join(l for l in LINES if '"name"' in l) + "\n")
    m = mount_factory(desk, replica, cache=cache, name="m1")  # makes the cache
    m.stop()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    catalogs = cache / FORMAT_DIR / "catalogs"
    for p in catalogs.iterdir():
        p.unlink()
    catalogs.rmdir()
    catalogs.symlink_to(elsewhere)
    m2 = mount_factory(desk, replica, cache=cache, name="m2")
    assert len(names_of(m2)) == len([l for l in LINES if '"name"' in l])
    m2.stop()
    assert list(elsewhere.iterdir()) == [], "nothing written through the symlink"
