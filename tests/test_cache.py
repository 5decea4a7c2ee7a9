"""The content-addressed store: atomic entries, damage detected, keys canonical."""

import numpy as np

from atlasgen.cache import Cache, content_key


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
    assert not list(entry.path.parent.glob(".tmp-*"))


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


def test_second_writer_of_same_key_keeps_one_whole_entry(tmp_path):
    cache = Cache(tmp_path)
    key = content_key({"same": True})
    cache.put("k", key, {"f": b"first"})
    cache.put("k", key, {"f": b"first"})
    assert cache.get("k", key).file("f").read_bytes() == b"first"
    assert len(list((tmp_path / "k" / key[:2]).iterdir())) == 1
