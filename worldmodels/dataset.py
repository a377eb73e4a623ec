"""Episode datasets as plain Zarr v3 stores, written by many processes at once without locks.

Layout (documented for outside readers in the README):
- every per-step array has shape [episodes * slot, ...]; episode k owns rows
  [k * slot, k * slot + length) where `slot` (an attribute) is a multiple of the time chunk, so
  no two episodes ever share a chunk and concurrent writers of different episodes never collide;
  chunks wholly past an episode's length are never written (Zarr stores nothing for them);
- `episodes/{start,length,return,seed}` [episodes], one chunk per episode, is the index.
  `length` is written last, atomically (zarr's LocalStore renames a temporary file into place),
  so it is the commit marker: an episode with length 0 is absent, whatever rows exist for it.
- every chunk ends in a crc32c checksum (Zarr v3's `crc32c` codec, after zstd), and every chunk
  of a committed episode is stored, chunks of zeros included: the index says which chunks an
  episode has (its rows [start, start + length) of each array, and its own index entries), so a
  chunk that is missing or does not match its checksum is damage, reported naming the array, the
  chunk and the episode, never read as zeros or as wrong pixels.

A writer that dies mid-episode leaves an uncommitted slot that the rerun simply overwrites.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from worldmodels.errors import DataError, unreadable, vanished
from worldmodels.zarr_internals import ChunkWriter, chunk_key, read_into

FORMAT = "worldmodels.episodes/3"
# why a store of an older format cannot be read, to say so instead of a traceback
_OLDER = {"worldmodels.episodes/1": "its episodes come from other random streams",
          "worldmodels.episodes/2": "its chunks carry no checksums, so damage in them could not be told from data"}
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
            from zarr.codecs import Crc32cCodec, ZstdCodec

            root = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes={**attrs, **layout})
            compressors = [ZstdCodec(), Crc32cCodec()]  # the checksum covers the bytes on disk
            for name, f in fields.items():
                chunk = slot if f.row_bytes < _SMALL_ROW_BYTES else chunk_steps
                root.create_array(name, shape=(episodes * slot, *f.shape), chunks=(chunk, *f.shape),
                                  dtype=f.dtype, fill_value=0, compressors=compressors)
            for name in INDEX:
                root.create_array(f"episodes/{name}", shape=(episodes,), chunks=(1,), dtype=_INDEX_DTYPES[name],
                                  fill_value=0, compressors=compressors)
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

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether a store is at `path` (its zarr.json); StorageError where the file system cannot say
        now: on a network file system a failing server shows first when a file is looked up (ESTALE)."""
        try:
            return stat.S_ISREG(os.stat(Path(path) / "zarr.json").st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError:
            raise
        except OSError as exc:
            raise unreadable(f"dataset {path}", exc) from None

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "EpisodeStore":
        """Open an existing store; a clear error when it is missing or not an episode store."""
        import zarr

        path = Path(path)
        if not cls.exists(path):
            raise DataError(f"no dataset at {path} (run the stage that writes it first)")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except PermissionError:
            raise
        except FileNotFoundError as exc:  # zarr's GroupNotFoundError for a zarr.json that is no group's
            raise DataError(f"cannot open dataset {path}: {exc}") from None
        except OSError as exc:  # the read failed (EIO, ESTALE): not damage
            raise unreadable(f"dataset {path}", exc) from None
        except Exception as exc:  # zarr raises many types for a damaged store
            raise DataError(f"cannot open dataset {path}: {exc}") from None
        found = group.attrs.get("format")
        if isinstance(found, str) and found.startswith(FORMAT.split("/")[0] + "/") and found != FORMAT:
            why = _OLDER.get(found, "a format this version does not know")
            raise DataError(f"{path} was written by another version of worldmodels (format {found}, this version "
                            f"reads {FORMAT}: {why}); collect it again in a new run directory")
        if found != FORMAT:
            raise DataError(f"{path} is not a worldmodels episode dataset")
        return cls(path, group)

    # --- the index ------------------------------------------------------------------------

    def index(self) -> dict[str, np.ndarray]:
        """The episode index: start, length (0 = not yet written), return, seed, each [episodes]."""
        index = {name: self._read(f"episodes/{name}", slice(None)) for name in INDEX}
        committed = np.flatnonzero(index["length"] > 0)
        for name in INDEX:  # a committed episode has every entry: a missing one is not a zero
            missing = committed[~self._stored(f"episodes/{name}", committed)]
            if len(missing):
                raise self._damage(f"episodes/{name}", int(missing[0]), int(missing[0]), "is missing")
        return index

    def lengths(self) -> np.ndarray:
        """Committed length of every episode (0 where the episode is not written yet), int64 [episodes]."""
        return self._read("episodes/length", slice(None))

    def complete(self) -> np.ndarray:
        """Indices of the committed episodes, in order."""
        return np.flatnonzero(self.lengths() > 0)

    def episode_chunks(self, k: int, length: int) -> dict[str, range]:
        """The chunks (along time) episode k of `length` rows has in each array, index entries included."""
        out = {}
        for name in self.fields:
            rows = self.array(name).chunks[0]
            out[name] = range(k * self.slot // rows, -(-(k * self.slot + length) // rows))
        for name in INDEX:
            out[f"episodes/{name}"] = range(k, k + 1)
        return out

    def damaged_chunks(self, k: int) -> list[tuple[str, int, str]]:
        """Every chunk of committed episode k that is missing or does not decode: (array, chunk, why)."""
        length = int(self._read("episodes/length", k))
        found = []
        for name, chunks in self.episode_chunks(k, length).items():
            array = self.array(name)
            rows = array.chunks[0]
            for c in chunks:
                if not self.chunk_file(name, c).is_file():
                    found.append((name, c, "is missing"))
                    continue
                try:
                    array[c * rows:(c + 1) * rows]
                except OSError as exc:  # not known to be damaged: never dropped
                    raise unreadable(self.describe_chunk(name, c, k), exc) from exc
                except Exception as exc:  # a failed checksum or a codec error
                    found.append((name, c, f"does not verify ({type(exc).__name__}: {exc})"))
        return found

    def uncommit(self, k: int) -> None:
        """Make episode k absent again (its length entry removed), so that its stage writes it anew."""
        self.chunk_file("episodes/length", k).unlink(missing_ok=True)

    # --- episodes -------------------------------------------------------------------------

    def write_episode(self, k: int, data: dict[str, np.ndarray], *, ret: float, seed: int) -> None:
        """Write episode k's rows, then commit it by writing its index entry (length last)."""
        length = len(next(iter(data.values())))
        if set(data) != set(self.fields):
            raise ValueError(f"episode fields {sorted(data)} != store fields {sorted(self.fields)}")
        if not 0 < length <= self.slot:
            raise ValueError(f"episode length {length} outside 1..{self.slot}")
        if not (self.path / "zarr.json").is_file():  # writing would half recreate a removed store
            raise vanished(self.path, f"episode {k} was being written")
        start = k * self.slot
        for name, values in data.items():
            f = self.fields[name]
            if values.shape != (length, *f.shape):
                raise ValueError(f"{name}: shape {values.shape} != {(length, *f.shape)}")
        try:
            for name, values in data.items():
                self._write_rows(name, start, np.ascontiguousarray(values, dtype=self.fields[name].dtype))
            for name, value in (("start", start), ("return", ret), ("seed", seed), ("length", length)):
                # length last: the commit marker, only once everything else is stored
                self._writer(f"episodes/{name}").write(k, np.array([value], _INDEX_DTYPES[name]))
        except OSError:  # e.g. a full disk: leave no chunk of an episode that is not committed
            for name, chunks in self.episode_chunks(k, length).items():
                for c in chunks:
                    self.chunk_file(name, c).unlink(missing_ok=True)
            raise

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
        start = k * self.slot
        out = {}
        for name in names or self.fields:
            f = self.fields[name]
            out[name] = self.read_rows_into(name, start, np.empty((length, *f.shape), f.dtype), k)
        return out

    def read_rows_into(self, name: str, first: int, out: np.ndarray, episode: int) -> np.ndarray:
        """Decode rows first.. of a per-step array (rows of `episode`) into `out`; a chunk that is
        missing or fails its checksum is a DataError naming the array, the chunk and the episode."""
        array = self.array(name)
        rows = array.chunks[0]
        for c in range(first // rows, -(-(first + len(out)) // rows)):
            if not self.chunk_file(name, c).is_file():
                raise self._damage(name, c, episode, "is missing")
        try:
            return read_into(array, slice(first, first + len(out)), out)
        except Exception as exc:  # a failed checksum or a codec error, in one of the chunks read
            c = first // rows
            for c in range(first // rows, -(-(first + len(out)) // rows)):
                try:
                    array[c * rows:(c + 1) * rows]
                except Exception:
                    break
            if isinstance(exc, OSError):  # a read that failed: not damage
                raise unreadable(self.describe_chunk(name, c, episode), exc) from exc
            raise self._damage(name, c, episode, f"does not verify ({type(exc).__name__}: {exc})") from None

    def array(self, name: str) -> Any:
        """The underlying zarr array (for chunk-wise readers)."""
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def _stored(self, name: str, chunks: np.ndarray) -> np.ndarray:
        """Whether each of `chunks` (of a one-chunk-per-episode array) has a file."""
        return np.array([self.chunk_file(name, int(c)).is_file() for c in chunks], bool)

    def chunk_file(self, name: str, chunk: int) -> Path:
        """The file of chunk `chunk` (along time) of array `name`."""
        return self.path / name / chunk_key(self.array(name), chunk)

    def describe_chunk(self, name: str, chunk: int, episode: int) -> str:
        return f"{self.path}/{name}: chunk {chunk_key(self.array(name), chunk)} of episode {episode}"

    def _damage(self, name: str, chunk: int, episode: int, what: str) -> DataError:
        return DataError(f"{self.describe_chunk(name, chunk, episode)} {what}; `python -m worldmodels verify "
                         f"{self.path.parent.parent} --repair` drops the damaged episodes, then rerun the stage that wrote them")

    def _read(self, name: str, where: Any) -> np.ndarray:
        try:
            return self.array(name)[where]
        except OSError as exc:
            raise unreadable(f"{self.path}/{name} at {where!r}", exc) from exc
        except Exception as exc:  # a damaged chunk surfaces as a codec or decode error
            raise DataError(f"{self.path}/{name}: cannot read {where!r}: {type(exc).__name__}: {exc}") from None


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in b:
        if a.get(key) != b[key]:
            return f"{key}: {a.get(key)!r} != {b[key]!r}"
    return "?"
