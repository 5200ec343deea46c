"""ADM-format image batches: ``.npz`` with ``arr_0`` uint8 [N, H, W, 3] (and class labels ``arr_1`` [N]).

That is what ADM's sampling scripts write and its evaluator (and ``VIRTUAL_imagenet256_labeled.npz``) reads.
Both directions stream: `NpzImageWriter` writes the zip member chunk by chunk and `NpzImageReader` reads batches
out of it, so 50k 256×256 images (9.8 GB) never need to be in memory. Files are plain ``np.savez`` archives
(stored, uncompressed; zip64 when large) and load with ``np.load``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from typing import IO

import numpy as np

__all__ = ["NpzImageReader", "NpzImageWriter", "save_adm_npz"]


class NpzImageWriter:
    """Write ``num_images`` uint8 images [H, W, 3] in order, then optional labels, into an ADM ``.npz``.

    Example::

        with NpzImageWriter("samples.npz", num_images=50_000, image_shape=(256, 256, 3)) as writer:
            for batch in batches:  # uint8 [B, 256, 256, 3]
                writer.write(batch)
            writer.set_labels(labels)  # int [50_000]
    """

    def __init__(self, path: str | os.PathLike, num_images: int, image_shape: tuple[int, int, int]) -> None:
        if len(image_shape) != 3 or image_shape[2] != 3:
            raise ValueError(f"image_shape must be (H, W, 3), got {image_shape}.")
        self.path = os.fspath(path)
        self.num_images = int(num_images)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.written = 0
        self._labels: np.ndarray | None = None
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._member: IO[bytes] | None = self._zip.open("arr_0.npy", "w", force_zip64=True)
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.num_images, *self.image_shape)}
        np.lib.format.write_array_header_2_0(self._member, header)

    def write(self, images: np.ndarray) -> None:
        """Append uint8 [B, H, W, 3]."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"Expected uint8 images [B, {', '.join(map(str, self.image_shape))}], got {images.dtype} "
                f"{images.shape}; convert with (255 * x).round().astype(np.uint8)."
            )
        if self.written + len(images) > self.num_images:
            raise ValueError(f"Writing more than the declared {self.num_images} images.")
        assert self._member is not None
        self._member.write(np.ascontiguousarray(images).tobytes())
        self.written += len(images)

    def set_labels(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        if labels.shape != (self.num_images,):
            raise ValueError(f"labels must have shape ({self.num_images},), got {labels.shape}.")
        self._labels = labels.astype(np.int64)

    def close(self, check: bool = True) -> None:
        """Finish the file; ``check`` verifies that exactly ``num_images`` were written."""
        if self._member is None:
            return
        self._member.close()
        self._member = None
        try:
            if check and self.written != self.num_images:
                raise ValueError(f"{self.path}: declared {self.num_images} images but wrote {self.written}.")
            if self._labels is not None:
                with self._zip.open("arr_1.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, self._labels)
        finally:
            self._zip.close()

    def __enter__(self) -> NpzImageWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(check=exc_type is None)  # an error inside the block is the one to report


def save_adm_npz(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None) -> None:
    """All-in-memory convenience: uint8 [N, H, W, 3] (+ labels [N]) → ADM ``.npz``."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Expected uint8 images [N, H, W, 3], got shape {images.shape}.")
    with NpzImageWriter(path, len(images), images.shape[1:]) as writer:
        writer.write(images)
        if labels is not None:
            writer.set_labels(labels)


class NpzImageReader:
    """Batches of ``arr_0`` from an ADM ``.npz`` without loading it whole.

    ``num_images``, ``image_shape`` (H, W, 3) and ``labels`` (``arr_1`` when present, else None) are read
    from the header; `batches` yields uint8 [B, H, W, 3].
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No such .npz file: {self.path!r}.")
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as error:
            raise ValueError(f"{self.path} is not an .npz (zip) archive: {error}") from error
        if "arr_0.npy" not in names:
            raise ValueError(
                f"{self.path} has no 'arr_0' (found {[n.removesuffix('.npy') for n in names]}); an ADM image batch "
                "stores uint8 images [N, H, W, 3] in arr_0 (np.savez(path, images, labels))."
            )
        with zipfile.ZipFile(self.path) as archive, archive.open("arr_0.npy") as member:
            shape, dtype = self._read_header(member)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(
                f"{self.path}: arr_0 must be uint8 [N, H, W, 3] (ADM format), got {dtype} {shape}."
            )
        self.num_images = int(shape[0])
        self.image_shape = tuple(int(s) for s in shape[1:])
        self.labels: np.ndarray | None = None
        if "arr_1.npy" in names:
            with np.load(self.path) as data:
                labels = data["arr_1"]
            if labels.shape == (self.num_images,):
                self.labels = labels.astype(np.int64)

    @staticmethod
    def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        if fortran:
            raise ValueError("Fortran-ordered arr_0 is not supported; re-save it with np.savez.")
        return shape, dtype

    def __len__(self) -> int:
        return self.num_images

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
        """uint8 [B, H, W, 3] batches in file order (the first ``limit`` images when given)."""
        total = self.num_images if limit is None else min(limit, self.num_images)
        per_image = int(np.prod(self.image_shape))
        with zipfile.ZipFile(self.path) as archive, archive.open("arr_0.npy") as member:
            self._read_header(member)
            done = 0
            while done < total:
                n = min(batch_size, total - done)
                data = member.read(n * per_image)
                if len(data) != n * per_image:
                    raise ValueError(f"{self.path}: arr_0 is truncated after {done} images.")
                yield np.frombuffer(data, dtype=np.uint8).reshape(n, *self.image_shape)
                done += n
