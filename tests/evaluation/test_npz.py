"""ADM-format .npz: streamed writing/reading, np.load compatibility, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ibq_hf.evaluation import NpzImageReader, NpzImageWriter, save_adm_npz


def test_roundtrip_and_numpy_compatibility(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(11, 8, 6, 3), dtype=np.uint8)
    labels = np.arange(11) % 3
    with NpzImageWriter(tmp_path / "a.npz", 11, (8, 6, 3)) as writer:
        writer.write(images[:4])
        writer.write(images[4:])
        writer.set_labels(labels)
    with np.load(tmp_path / "a.npz") as data:  # what ADM's evaluator does
        np.testing.assert_array_equal(data["arr_0"], images)
        np.testing.assert_array_equal(data["arr_1"], labels)
    reader = NpzImageReader(tmp_path / "a.npz")
    assert len(reader) == 11 and reader.image_shape == (8, 6, 3)
    np.testing.assert_array_equal(reader.labels, labels)
    batches = list(reader.batches(5))
    assert [len(b) for b in batches] == [5, 5, 1]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    assert sum(len(b) for b in reader.batches(4, limit=6)) == 6
    np.savez_compressed(tmp_path / "c.npz", images)  # a plain numpy file (compressed, no labels) also reads
    reader = NpzImageReader(tmp_path / "c.npz")
    assert reader.labels is None
    np.testing.assert_array_equal(np.concatenate(list(reader.batches(3))), images)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_adm_npz(tmp_path / "f.npz", np.zeros((2, 4, 4, 3), np.float32))
    writer = NpzImageWriter(tmp_path / "g.npz", 3, (4, 4, 3))
    writer.write(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="declared 3 images but wrote 2"):
        writer.close()
    np.savez(tmp_path / "h.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="no 'arr_0'"):
        NpzImageReader(tmp_path / "h.npz")
    np.savez(tmp_path / "i.npz", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        NpzImageReader(tmp_path / "i.npz")
    with pytest.raises(FileNotFoundError):
        NpzImageReader(tmp_path / "missing.npz")
