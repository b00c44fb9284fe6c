"""VectorIndex: search, tombstones, and saves that survive being cut short."""

import os

import numpy as np

from alignkit.rag.vectors import VectorIndex


def _index() -> tuple[VectorIndex, np.ndarray]:
    x = np.eye(4, dtype=np.float32)
    v = VectorIndex(4)
    v.add([10, 11, 12, 13], x)
    return v, x


def test_search_skips_tombstones_and_ids_can_be_reused():
    v, x = _index()
    assert v.search(x[:1], 1).ids.tolist() == [[10]]
    assert v.remove([10, 99]) == 1 and len(v) == 3 and 10 not in v
    assert 10 not in v.search(x[:1], 3).ids[0].tolist()
    v.add([10], x[1:2])  # the id comes back with another vector
    assert set(v.search(x[1:2], 2).ids[0].tolist()) == {10, 11}  # both at cosine 1


def test_round_trip_keeps_live_ids_and_tombstones(tmp_path):
    v, x = _index()
    v.remove([12])
    v.save(tmp_path / "vectors")
    w = VectorIndex.load(tmp_path / "vectors")
    assert w.ids().tolist() == [10, 11, 13] and w.search(x[2:3], 1).ids[0, 0] != 12


def test_a_save_cut_between_its_renames_is_found_and_cleaned_up(tmp_path):
    """atomic_dir moves the old copy aside (.NAME.old-TAG) before renaming the new one in; a kill in between leaves
    no NAME at all. load() reads the copy set aside; the next save removes the leftovers."""
    v, x = _index()
    v.save(tmp_path / "vectors")
    os.replace(tmp_path / "vectors", tmp_path / ".vectors.old-deadbeef")
    (tmp_path / ".vectors.tmp-deadbeef").mkdir()  # the half-written new copy
    w = VectorIndex.load(tmp_path / "vectors")
    assert w.ids().tolist() == [10, 11, 12, 13]
    w.save(tmp_path / "vectors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]
