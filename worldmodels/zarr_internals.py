"""The one place that reaches inside zarr (pinned at 3.1.6), for speed its public API does not give.

- `ChunkWriter` writes whole chunks through an array's own codecs into its local store's files,
  synchronously: `AsyncArray.metadata` (codecs, chunk keys, chunk spec), each codec's
  `_encode_sync` (zarr.abc.codec.SupportsSyncCodec) and `LocalStore.root`;
- `read_into` decodes a selection straight into a given numpy array (`out=` of
  `get_basic_selection` wants an NDBuffer, made with `zarr.core.buffer.default_buffer_prototype`);
- `chunk_key` names a chunk's file (`AsyncArray.metadata.encode_chunk_key`), to tell a chunk that
  is missing from one that holds the fill value (zarr reads both as zeros).

`check()` says in one line which of these an upgrade removed; tests/test_adapters.py runs it, and
a test writes a store both ways and compares the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.files import atomic_write

USED = {
    "zarr.core.buffer.default_buffer_prototype": "buffers for decoding into given arrays",
    "zarr.abc.codec.SupportsSyncCodec": "codecs that encode without the event loop",
    "AsyncArray.metadata.codecs": "an array's codec chain",
    "AsyncArray.metadata.encode_chunk_key": "where a chunk is stored",
    "AsyncArray.metadata.get_chunk_spec": "the spec codecs encode a chunk with",
    "AsyncArray.store_path": "the array's place in its store",
    "LocalStore.root": "the folder of a local store, where chunk files are written",
    "Codec._encode_sync": "synchronous encoding",
}


def read_into(array: Any, selection: slice, out: np.ndarray) -> np.ndarray:
    """Decode `array[selection]` into `out` (a C-contiguous array of the selection's shape)."""
    from zarr.core.buffer import default_buffer_prototype

    array.get_basic_selection(selection, out=default_buffer_prototype().nd_buffer.from_numpy_array(out))
    return out


def chunk_key(array: Any, index: int) -> str:
    """The key (path below the array) of chunk `index` along the first axis, e.g. "c/3/0/0/0"."""
    return array.async_array.metadata.encode_chunk_key((index,) + (0,) * (len(array.shape) - 1))


class ChunkWriter:
    """Whole chunks of one array, written synchronously through the array's own codecs and store.

    An episode commit is a dozen whole-chunk writes. Through zarr's array API each costs about
    0.7 ms of event-loop round trips, thread hand-offs and read-modify-write checks, more than
    compressing a 1.5 MB frame chunk. A whole chunk needs none of that: it is encoded by the
    array's codecs' synchronous encoders (zarr.abc.codec.SupportsSyncCodec) and written to a
    temporary file renamed into place, as the store's own set_sync would. The files are the ones
    zarr writes with `write_empty_chunks`: a chunk of zeros is stored too, so that a missing chunk
    file always means damage. Unlike set_sync, which makes every missing parent folder, a write
    into a store removed under it fails rather than recreate the store and its run directory.
    """

    def __init__(self, array: Any):
        from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec, SupportsSyncCodec
        from zarr.core.buffer import default_buffer_prototype

        from worldmodels.errors import DataError

        meta = array.async_array.metadata
        # one chunk spec serves every codec of a plain array-to-bytes, bytes-to-bytes chain (the
        # arrays this module creates); filters or sharding would need zarr's own pipeline
        first, *rest = meta.codecs
        if not (isinstance(first, ArrayBytesCodec) and all(isinstance(c, BytesBytesCodec) for c in rest)
                and all(isinstance(c, SupportsSyncCodec) for c in meta.codecs)):
            raise DataError(f"{array.store_path}: codecs {[type(c).__name__ for c in meta.codecs]} are not "
                            "ones this dataset writes (bytes, then compressors)")
        self._meta, store_path = meta, array.async_array.store_path
        if not isinstance(getattr(store_path.store, "root", None), Path):
            raise DataError(f"{store_path}: chunks are written straight to files, and this store is not a folder")
        self._directory = store_path.store.root / store_path.path
        self._spec = meta.get_chunk_spec((0,) * len(array.shape), array.config, default_buffer_prototype())
        self.rows: int = array.chunks[0]

    def write(self, index: int, block: np.ndarray) -> None:
        """Store `block`, a whole chunk, as chunk `index` along the first axis."""
        if block.shape != self._spec.shape:
            raise ValueError(f"a chunk of shape {block.shape} for chunks of {self._spec.shape}")
        key = self._meta.encode_chunk_key((index,) + (0,) * (block.ndim - 1))
        value = self._spec.prototype.nd_buffer.from_numpy_array(block)
        for codec in self._meta.codecs:
            value = codec._encode_sync(value, self._spec)
        atomic_write(self._directory / key, value.as_buffer_like(), root=self._directory, fsync=False)


def check() -> None:
    """Raise RuntimeError naming what is missing when this zarr lacks something used here."""
    import tempfile

    import zarr

    missing = []
    try:
        from zarr.abc.codec import SupportsSyncCodec  # noqa: F401
    except ImportError:
        missing.append("zarr.abc.codec.SupportsSyncCodec")
    try:
        from zarr.core.buffer import default_buffer_prototype  # noqa: F401
    except ImportError:
        missing.append("zarr.core.buffer.default_buffer_prototype")
    if not missing:
        with tempfile.TemporaryDirectory() as folder:
            array = zarr.create_array(f"{folder}/a", shape=(4, 2), chunks=(2, 2), dtype="uint8", fill_value=0)
            async_array = getattr(array, "async_array", None)
            meta = getattr(async_array, "metadata", None)
            for name, ok in (("AsyncArray.metadata.codecs", hasattr(meta, "codecs")),
                             ("AsyncArray.metadata.encode_chunk_key", hasattr(meta, "encode_chunk_key")),
                             ("AsyncArray.metadata.get_chunk_spec", hasattr(meta, "get_chunk_spec")),
                             ("AsyncArray.store_path", hasattr(async_array, "store_path"))):
                if not ok:
                    missing.append(name)
            if not missing:
                if not isinstance(getattr(async_array.store_path.store, "root", None), Path):
                    missing.append("LocalStore.root")
                if not all(hasattr(codec, "_encode_sync") for codec in meta.codecs):
                    missing.append("Codec._encode_sync")
            if not missing:
                ChunkWriter(array).write(1, np.full((2, 2), 7, np.uint8))
                if not (array[2:4] == 7).all() or read_into(array, slice(2, 4), np.zeros((2, 2), np.uint8)).sum() != 28:
                    missing.append("ChunkWriter writes what zarr reads back")
                elif chunk_key(array, 1) != "c/1/0" or not (Path(folder) / "a" / "c" / "1" / "0").is_file():
                    missing.append("AsyncArray.metadata.encode_chunk_key")
    if missing:
        raise RuntimeError(f"zarr {zarr.__version__} lacks what worldmodels/zarr_internals.py uses: "
                           + "; ".join(f"{name} ({USED.get(name, 'a round trip')})" for name in missing))
