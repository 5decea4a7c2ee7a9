"""The content-addressed store: atomic entries, damage detected, keys canonical."""

import errno
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from atlasgen import forks, threads
from atlasgen.atomic import HOST, clean_leftovers
from atlasgen.cache import Cache, content_key
from atlasgen.errors import AtlasError


def test_content_key_is_canonical():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_put_get_roundtrip(tmp_path):
    cache = Cache(tmp_path)
    key = content_key({"x": 1})
    arrays = {"v": np.arange(6, dtype=np.float32).reshape(2, 3)}
    cache.put("featvis", key, {"img/a.png": b"png-bytes"}, arrays, meta={"id": "u"})
    entry = cache.get("featvis", key)
    assert entry is not None and entry.meta["id"] == "u"
    assert entry.file("img/a.png").read_bytes() == b"png-bytes"
    np.testing.assert_array_equal(entry.arrays()["v"], arrays["v"])
    assert not list(entry.path.parent.glob(".*tmp-*"))


def test_damaged_entries_are_misses(tmp_path):
    cache = Cache(tmp_path)
    later = Cache(tmp_path)  # another build: entries are verified once per process
    for i, damage in enumerate(["truncate", "flip", "delete", "meta"]):
        key = content_key({"i": i})
        entry = cache.put("k", key, {"f.bin": b"0123456789"})
        target = entry.file("f.bin")
        if damage == "truncate":
            target.write_bytes(b"01234")
        elif damage == "flip":
            target.write_bytes(b"0123456780")
        elif damage == "delete":
            target.unlink()
        else:
            entry.file("meta.json").write_text("{not json")
        assert later.get("k", key) is None, damage
        assert not entry.path.exists()  # removed, so the next put starts clean
    assert len(later.corrupt) == 4


def test_entries_checked_ahead_in_processes_are_trusted_or_recomputed(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(forks, "MIN_CHUNKS", 2)
    monkeypatch.setattr("atlasgen.cache.FORK_CHECK_BYTES", 0)
    cache = Cache(tmp_path)
    keys = [content_key({"i": i}) for i in range(40)]
    for i, key in enumerate(keys):
        cache.put("k", key, {f"f{j}.bin": bytes([i, j]) * 50 for j in range(1 + i % 7)})
    (cache.entry_path("k", keys[3]) / "f0.bin").write_bytes(b"damaged")
    (cache.entry_path("k", keys[30]) / "meta.json").unlink()
    later = Cache(tmp_path)
    later.check([("k", key) for key in keys] + [("k", content_key({"absent": 1}))])
    assert sorted(later._checked.values()).count(True) == 2 and len(later._checked) == 40
    found = [later.get("k", key) for key in keys]
    assert [i for i, entry in enumerate(found) if entry is None] == [3, 30]
    assert sorted(later.corrupt) == sorted([keys[3], keys[30]])
    assert not later._checked  # each result is used once


def test_second_writer_of_same_key_keeps_one_whole_entry(tmp_path):
    cache = Cache(tmp_path)
    key = content_key({"same": True})
    cache.put("k", key, {"f": b"first"})
    cache.put("k", key, {"f": b"first"})
    assert cache.get("k", key).file("f").read_bytes() == b"first"
    assert len(list((tmp_path / "k" / key[:2]).iterdir())) == 1


def test_a_one_byte_edit_of_meta_that_keeps_valid_json_is_a_miss(tmp_path):
    cache = Cache(tmp_path)
    key = content_key({"meta": 1})
    entry = cache.put("k", key, {"f.bin": b"x"}, meta={"source": "cat.png", "size": 11})
    meta = entry.file("meta.json")
    for old, new in ((b'"size": 11', b'"size": 12'), (b'"cat.png"', b'"rat.png"'), (b"\n", b" \n")):
        cache.put("k", key, {"f.bin": b"x"}, meta={"source": "cat.png", "size": 11})
        text = meta.read_bytes()
        assert old in text
        meta.write_bytes(text.replace(old, new, 1))
        json.loads(meta.read_text())  # still valid JSON
        assert Cache(tmp_path).get("k", key) is None, new


def test_an_unlisted_file_in_an_entry_is_damage(tmp_path):
    cache = Cache(tmp_path)
    key = content_key({"extra": 1})
    entry = cache.put("k", key, {"f.bin": b"x"})
    (entry.path / "injected.png").write_bytes(b"?")
    assert Cache(tmp_path).get("k", key) is None


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "k" / "ab"
    folder.mkdir(parents=True)
    mine = folder / f".abcdef.tmp-{os.getpid()}@{HOST}-0123abcd"
    theirs = folder / f".abcdef.tmp-{dead.pid}@{HOST}-0123abcd"
    other_host = folder / f".abcdef.tmp-{dead.pid}@elsewhere-node-7-0123abcd"
    user = folder / ".abcdef.tmp-notes"
    for path in (mine, theirs, other_host):
        path.mkdir()
        (path / "arrays.npz").write_bytes(b"partial")
    user.write_text("not ours")
    assert clean_leftovers(tmp_path, recursive=True, depth=3) == 1
    assert mine.exists() and other_host.exists() and user.exists() and not theirs.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(other_host, (old, old))
    assert clean_leftovers(tmp_path, recursive=True, depth=3) == 1
    assert not other_host.exists()


def test_disk_full_names_the_folder_and_the_space(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("atlasgen.cache._write_synced", full)
    with pytest.raises(AtlasError, match=r"no space left on the device of .*cache \(it needs at least 0\.1 MB; [0-9.]+ MB free\)"):
        cache.put("k", content_key({"big": 1}), {"f.bin": b"x" * 100_000})
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]
