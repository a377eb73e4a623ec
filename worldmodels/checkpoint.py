"""One checkpoint protocol for every stage: atomic files, a completion marker, keep-last-K, fallback.

A checkpoint is `step-NNNNNNNNN.pt` (torch.save of a dict of tensors, numbers, strings, bytes
and containers of them) plus `step-NNNNNNNNN.json`, the marker, written after the data file
and holding its size and sha256. Only a checkpoint whose marker matches its data counts; the
newest one that fails to verify or load is skipped with a warning in favour of the one before.
Loading uses `torch.load(weights_only=True)`: nothing from disk can run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldmodels.errors import DataError, unreadable
from worldmodels.files import atomic_write, read_json

if TYPE_CHECKING:  # torch is imported where a tensor is read or written: `status` lists checkpoints without it
    import torch

log = logging.getLogger("worldmodels")


class Checkpointer:
    """Saves a stage's state every `every_steps` steps or `every_s` seconds, keeping the last `keep`.
    `root`, when given, is the run directory: a save never recreates it once it was removed.
    `kernels`, when given, is the fingerprint of the CPU kernels computing the states
    (worldmodels.device.cpu_kernels): every marker records it, and resuming from a checkpoint
    made with other kernels says that the run will not end bitwise as an uninterrupted one."""

    def __init__(self, directory: str | Path, *, every_steps: int, every_s: float, keep: int,
                 root: Path | None = None, kernels: str | None = None):
        self.directory, self.root, self.kernels = Path(directory), root, kernels
        self.every_steps, self.every_s, self.keep = every_steps, every_s, keep
        self._last_save = time.monotonic()

    def due(self, step: int) -> bool:
        """Whether a save is due after `step` completed steps."""
        return step % self.every_steps == 0 or time.monotonic() - self._last_save >= self.every_s

    def save(self, step: int, state: dict[str, Any], summary: dict[str, Any] | None = None) -> Path:
        """Write checkpoint `step` atomically, then its marker (with `summary`, readable without
        torch), then prune all but the last `keep`."""
        kernels = {"kernels": self.kernels} if self.kernels else {}
        path = save_file(self.directory / f"step-{step:09d}.pt", state, {"step": step, **kernels, **(summary or {})},
                         root=self.root)
        self._last_save = time.monotonic()
        for old in self.steps()[: -self.keep]:
            (self.directory / f"step-{old:09d}.json").unlink(missing_ok=True)
            (self.directory / f"step-{old:09d}.pt").unlink(missing_ok=True)
        return path

    def steps(self) -> list[int]:
        """Steps that have a marker, oldest first (the data is verified only when loaded)."""
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("step-*.json"))

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint that verifies and loads, or None when there is none (for readers:
        nothing is changed on disk, which may be another run's, read-only). A read that fails raises
        StorageError rather than falling back to an older checkpoint."""
        for step in reversed(self.steps()):
            try:
                return load_file(self.directory / f"step-{step:09d}.pt", map_location)
            except DataError as exc:
                log.warning("skipping checkpoint: %s; falling back to the previous one", exc)
        return None

    def resume(self, stage: str, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """For the stage writing here: the newest checkpoint that verifies, or None for a fresh start.

        Leftovers of interrupted writes are removed; a checkpoint that does not verify is set aside
        as `*.corrupt` (it no longer holds one of the keep-last-K places); and when none verifies
        but some were set aside, this refuses rather than silently starting over. A checkpoint whose
        read fails is left as it is, and the stage stops: the rerun reads it again.
        """
        for leftover in self.directory.glob(".step-*.tmp"):  # a kill mid-write (one writer per stage)
            leftover.unlink(missing_ok=True)
        steps = self.steps()
        for step in reversed(steps):
            path = self.directory / f"step-{step:09d}.pt"
            try:
                state = load_file(path, map_location)
            except DataError as exc:
                log.warning("setting aside %s as corrupt (%s); falling back to the previous one", path.name, exc)
                self.set_aside(step)
                continue
            made = (read_json(path.with_suffix(".json")) or {}).get("kernels")
            if self.kernels and made and made != self.kernels:
                from worldmodels.device import kernels_warning

                log.warning(kernels_warning(f"{stage}: {path.name} was made", made, self.kernels))
            return state
        corrupt = {p.name.split(".")[0] for p in self.corrupt()}  # steps; a marker without its data counts too
        if corrupt:  # and so does every rerun after the first that found them, until --restart
            raise DataError(f"{stage}: none of its checkpoints in {self.directory} verifies ({len(corrupt)} set aside as "
                            f"*.corrupt); rerun with --restart to train it from the start")
        return None

    def corrupt(self) -> list[Path]:
        """Files a resume set aside as `*.corrupt`, which stop the stage from starting over."""
        return sorted(self.directory.glob("step-*.corrupt"))

    def set_aside(self, step: int, suffix: str = "corrupt") -> None:
        """Rename checkpoint `step` (data and marker) to `*.SUFFIX`: kept for a look, counted nowhere.
        `*.corrupt` (found so when resuming) stops the stage from starting over; `*.repaired` (set aside
        by `verify --repair`, whose user asked for the rerun) does not."""
        for part in (self.directory / f"step-{step:09d}.pt", self.directory / f"step-{step:09d}.json"):
            if part.exists():
                part.replace(_free_name(part, suffix))

    def lift_corrupt(self) -> int:
        """Rename every `*.corrupt` here `*.repaired` (`verify --repair`: its user asks for the rerun,
        which these would refuse); returns how many."""
        aside = self.corrupt()
        for path in aside:
            path.replace(_free_name(path.with_name(path.name.removesuffix(".corrupt")), "repaired"))
        return len(aside)


def _free_name(path: Path, suffix: str) -> Path:
    """`path.SUFFIX`, or `path.K.SUFFIX` where that is taken: a step may be set aside more than once
    (found corrupt, trained again, found corrupt again), and no copy set aside is overwritten."""
    target, k = path.with_name(f"{path.name}.{suffix}"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.{k}.{suffix}")
    return target


def _canonical(value: Any) -> Any:
    """`value` with every string interned: pickle writes a string once per object and refers back to
    it after, so the same state would be laid out (and hashed) otherwise by a run resumed from a
    checkpoint, whose strings were read back as new objects, than by one that made them itself."""
    if type(value) is str:
        return sys.intern(value)
    if type(value) in (dict, OrderedDict):  # a module's state_dict: an OrderedDict with its _metadata
        out = type(value)((_canonical(k), _canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = _canonical(value._metadata)
        return out
    if type(value) in (list, tuple):
        return type(value)(_canonical(v) for v in value)
    return value


def save_file(path: str | Path, state: dict[str, Any], summary: dict[str, Any] | None = None, *,
              root: Path | None = None) -> Path:
    """Write `state` to `path` atomically, then its marker (size, sha256 and `summary`) beside it;
    `root` as in files.atomic_write."""
    import torch

    path = Path(path)
    buffer = io.BytesIO()
    torch.save(_canonical(state), buffer)
    data = buffer.getvalue()
    atomic_write(path, data, root=root)
    marker = {**(summary or {}), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write(path.with_suffix(".json"), json.dumps(marker).encode(), root=root)
    return path


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint after checking it against its marker; DataError when it does not verify,
    StorageError when it cannot be read (not known to be damaged)."""
    import torch

    path = Path(path)
    marker_path = path.with_suffix(".json")
    try:
        marker = json.loads(marker_path.read_text())
        data = path.read_bytes()
    except (FileNotFoundError, ValueError) as exc:  # a marker without its data, or a garbled one
        raise DataError(f"{path}: unreadable checkpoint or marker ({exc})") from None
    except PermissionError:  # not the file system failing: the CLI says whose run this is
        raise
    except OSError as exc:
        raise unreadable(f"{path}:", exc) from exc
    if len(data) != marker.get("bytes") or hashlib.sha256(data).hexdigest() != marker.get("sha256"):
        raise DataError(f"{path}: corrupt checkpoint (does not match its marker)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise DataError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None


def model_digest(model: torch.nn.Module) -> str:
    """A digest of a model's parameters and buffers by content (names, dtypes, shapes, values): what
    downstream data records it was made by, so that a bit-identical retrained model still matches
    whatever file, device or torch.save framing it came through."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def latest_step(directory: str | Path) -> int | None:
    """The newest marked step in a checkpoint directory, read without loading anything."""
    steps = Checkpointer(directory, every_steps=1, every_s=0, keep=1).steps()
    return steps[-1] if steps else None


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with a one-line error naming the mismatch instead of a page of shapes."""
    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            raise DataError(f"{source}: parameter {name} has shape {tuple(tensor.shape)}, the config needs "
                            f"{tuple(own[name].shape)} (a model of another size?)")
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise DataError(f"{source}: not a checkpoint of this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.load_state_dict(state)


# --- the random states a training step draws from, so that a resumed run draws what an uninterrupted one would


def rng_state() -> dict[str, Any]:
    """torch's CPU and CUDA random states: the only global generators training draws from (each
    stage seeds them first). Python's and numpy's global states are left out: nothing here draws
    from them, and unseeded they would make two identical runs' checkpoints differ."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state saved."""
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
