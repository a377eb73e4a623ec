"""Episode datasets as plain Zarr v3 stores, written by many processes at once without locks.

Layout (documented for outside readers in the README):
- every per-step array has shape [episodes * slot, ...]; episode k owns rows
  [k * slot, k * slot + length) where `slot` (an attribute) is a multiple of the time chunk, so
  no two episodes ever share a chunk and concurrent writers of different episodes never collide;
  chunks wholly past an episode's length are never written (Zarr stores nothing for them);
- `episodes/{start,length,return,seed}` [episodes], one chunk per episode, is the index.
  `length` is written last, atomically (zarr's LocalStore renames a temporary file into place),
  so it is the commit marker: an episode with length 0 is absent, whatever rows exist for it.

A writer that dies mid-episode leaves an uncommitted slot that the rerun simply overwrites.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from worldmodels.errors import DataError
from worldmodels.zarr_internals import ChunkWriter

# /2: episodes drawn from worldmodels.seeds' named streams (/1 used the run seed directly)
FORMAT = "worldmodels.episodes/2"
INDEX = ("start", "length", "return", "seed")
_INDEX_DTYPES = {"start": "int64", "length": "int64", "return": "float64", "seed": "uint64"}
_SMALL_ROW_BYTES = 1024  # rows smaller than this are chunked one slot at a time


@dataclass(frozen=True)
class Field:
    """A per-step array: its dtype and the shape of one step's item."""

    dtype: str
    shape: tuple[int, ...] = ()

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


def slot_rows(max_steps: int, chunk_steps: int) -> int:
    """Rows reserved per episode: max_steps + 1 observations, rounded up to whole chunks."""
    return -(-(max_steps + 1) // chunk_steps) * chunk_steps


class EpisodeStore:
    """A Zarr v3 group of per-step arrays and an episode index; see the module docstring."""

    def __init__(self, path: Path, group: Any):
        self.path = path
        self._group = group
        attrs = group.attrs.asdict()
        self.attrs: dict[str, Any] = attrs
        self.num_episodes: int = int(attrs["episodes"])
        self.slot: int = int(attrs["slot"])
        self.fields: dict[str, Field] = {k: Field(v["dtype"], tuple(v["shape"])) for k, v in attrs["fields"].items()}
        self._arrays: dict[str, Any] = {}  # opened once: each open reads the array's metadata file
        self._writers: dict[str, ChunkWriter] = {}

    # --- creating and opening ---------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, fields: dict[str, Field], episodes: int, slot: int,
               chunk_steps: int, attrs: dict[str, Any]) -> "EpisodeStore":
        """Create the store, or open it if it exists with the same layout (safe when racing)."""
        import zarr

        path = Path(path)
        layout = {"format": FORMAT, "episodes": episodes, "slot": slot, "chunk_steps": chunk_steps,
                  "fields": {k: {"dtype": f.dtype, "shape": list(f.shape)} for k, f in fields.items()}}
        if not path.exists():
            # Build aside and rename into place: concurrent tasks race here, exactly one rename
            # wins, and nobody ever sees a half-written store.
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes={**attrs, **layout})
            for name, f in fields.items():
                chunk = slot if f.row_bytes < _SMALL_ROW_BYTES else chunk_steps
                root.create_array(name, shape=(episodes * slot, *f.shape), chunks=(chunk, *f.shape),
                                  dtype=f.dtype, fill_value=0)
            for name in INDEX:
                root.create_array(f"episodes/{name}", shape=(episodes,), chunks=(1,), dtype=_INDEX_DTYPES[name], fill_value=0)
            try:
                os.rename(tmp, path)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not path.exists():
                    raise
        store = cls.open(path, mode="r+")
        saved = {k: store.attrs.get(k) for k in layout}
        if saved != layout:
            raise DataError(f"{path} exists with another layout ({_first_difference(saved, layout)}); use a new run directory")
        return store

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "EpisodeStore":
        """Open an existing store; a clear error when it is missing or not an episode store."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise DataError(f"no dataset at {path} (run the stage that writes it first)")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except Exception as exc:  # zarr raises many types for a damaged store
            raise DataError(f"cannot open dataset {path}: {exc}") from None
        found = group.attrs.get("format")
        if isinstance(found, str) and found.startswith(FORMAT.split("/")[0] + "/") and found != FORMAT:
            raise DataError(f"{path} was written by another version of worldmodels (format {found}, this version "
                            f"reads {FORMAT}: its episodes come from other random streams); collect it again "
                            "in a new run directory")
        if found != FORMAT:
            raise DataError(f"{path} is not a worldmodels episode dataset")
        return cls(path, group)

    # --- the index ------------------------------------------------------------------------

    def index(self) -> dict[str, np.ndarray]:
        """The episode index: start, length (0 = not yet written), return, seed, each [episodes]."""
        return {name: self._read(f"episodes/{name}", slice(None)) for name in INDEX}

    def lengths(self) -> np.ndarray:
        """Committed length of every episode (0 where the episode is not written yet), int64 [episodes]."""
        return self._read("episodes/length", slice(None))

    def complete(self) -> np.ndarray:
        """Indices of the committed episodes, in order."""
        return np.flatnonzero(self.lengths() > 0)

    # --- episodes -------------------------------------------------------------------------

    def write_episode(self, k: int, data: dict[str, np.ndarray], *, ret: float, seed: int) -> None:
        """Write episode k's rows, then commit it by writing its index entry (length last)."""
        length = len(next(iter(data.values())))
        if set(data) != set(self.fields):
            raise ValueError(f"episode fields {sorted(data)} != store fields {sorted(self.fields)}")
        if not 0 < length <= self.slot:
            raise ValueError(f"episode length {length} outside 1..{self.slot}")
        start = k * self.slot
        for name, values in data.items():
            f = self.fields[name]
            if values.shape != (length, *f.shape):
                raise ValueError(f"{name}: shape {values.shape} != {(length, *f.shape)}")
            self._write_rows(name, start, np.ascontiguousarray(values, dtype=f.dtype))
        for name, value in (("start", start), ("return", ret), ("seed", seed), ("length", length)):
            # length last: the commit marker, only once everything else is stored
            self._writer(f"episodes/{name}").write(k, np.array([value], _INDEX_DTYPES[name]))

    def _write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        """Store `values` as rows start.. of a per-step array, chunk by chunk (start is a chunk
        boundary); the last chunk is padded with the fill value, as zarr would have merged it."""
        writer = self._writer(name)
        chunk = writer.rows
        for offset in range(0, len(values), chunk):
            block = values[offset:offset + chunk]
            if len(block) < chunk:
                block = np.concatenate([block, np.zeros((chunk - len(block), *block.shape[1:]), block.dtype)])
            writer.write((start + offset) // chunk, block)

    def _writer(self, name: str) -> ChunkWriter:
        if name not in self._writers:
            self._writers[name] = ChunkWriter(self.array(name))
        return self._writers[name]

    def read_episode(self, k: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The committed rows of episode k, for the named fields (all by default)."""
        length = int(self._read("episodes/length", k))
        if length == 0:
            raise DataError(f"{self.path}: episode {k} has not been written")
        rows = slice(k * self.slot, k * self.slot + length)
        return {name: self._read(name, rows) for name in (names or self.fields)}

    def array(self, name: str) -> Any:
        """The underlying zarr array (for chunk-wise readers)."""
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def _read(self, name: str, where: Any) -> np.ndarray:
        try:
            return self.array(name)[where]
        except Exception as exc:  # a damaged chunk surfaces as a codec or decode error
            raise DataError(f"{self.path}/{name}: cannot read {where!r}: {type(exc).__name__}: {exc}") from None


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in b:
        if a.get(key) != b[key]:
            return f"{key}: {a.get(key)!r} != {b[key]!r}"
    return "?"
