"""Where the arithmetic runs: the device a stage asks for, and the precision it runs in there."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import weakref
from typing import Any, Callable

import torch

from worldmodels.errors import ConfigError


def select_device(name: str) -> torch.device:
    """"auto": CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device' is cuda but no CUDA device is available")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (Hopper and Ampere run it at full speed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CPU_CHUNK = 8  # rows per call of the models on a CPU (see in_fixed_chunks)


def in_fixed_chunks(fn: Callable[..., Any], *rows: torch.Tensor, chunk: int = CPU_CHUNK) -> Any:
    """`fn(*rows)`, computed on a CPU in chunks of exactly `chunk` rows (the last one padded with zeros).

    oneDNN and MKL pick their kernels by batch size, so a frame encoded in a batch of 25 can come
    out different in the last bit from the same frame in a batch of 64, which now and then flips
    an argmax and changes an episode. In chunks of one fixed size, a row's result depends on the
    row alone: results do not depend on `controller.batch`, `evaluate.batch`, `encode.batch_size`
    or on how episodes are split over tasks and ranks. Small chunks waste little on padding when
    few episodes are left in a batch. (On a GPU, where no bitwise promise is made, `fn` runs on
    the whole batch.) `rowwise` gives the same results faster where it can.
    """
    n = rows[0].shape[0]
    if rows[0].device.type != "cpu":
        return fn(*rows)
    rows = _padded(rows, n + -n % chunk)
    outs = [fn(*(r[i:i + chunk] for r in rows)) for i in range(0, len(rows[0]), chunk)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts)[:n] for parts in zip(*outs))
    return torch.cat(outs)[:n]


def _padded(rows: tuple[torch.Tensor, ...], size: int) -> tuple[torch.Tensor, ...]:
    """The rows followed by rows of zeros, `size` in all."""
    pad = size - rows[0].shape[0]
    return tuple(torch.cat([r, r.new_zeros((pad, *r.shape[1:]))]) for r in rows) if pad else rows


# model -> {(fn's code, batch size, the rows' shapes and dtypes): whether a whole batch gives in_fixed_chunks' bits}
_WHOLE: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, bool]]" = weakref.WeakKeyDictionary()


def rowwise(model: torch.nn.Module, fn: Callable[..., Any], *rows: torch.Tensor) -> Any:
    """`in_fixed_chunks(fn, *rows)`, bit for bit, computed on the whole batch where that gives the same bits.

    Chunks cost time: V's encoder and M's step on the demo's batches of 32 took 513 us a row in
    chunks of 8 against 413 on the whole batch (AVX-512). Yet most batch sizes get kernels that
    round every row as the chunks' kernel does (on that CPU, every size from 4 up). So the first
    time `fn` meets rows of a shape, it computes random rows of that shape both ways; where they
    agree to the bit, that shape goes whole from then on, where not, in chunks; fewer rows than
    a chunk go padded to the smallest size that goes whole (4 on that CPU). Kernels are
    chosen by shapes (and the process's torch threads, which no stage changes) and never by
    values, so rows that agree once agree always. `fn` runs `model`'s layers on `rows` alone; the
    answers are kept with the model, for its lifetime.
    """
    if rows[0].device.type != "cpu":
        return fn(*rows)
    n = rows[0].shape[0]
    if n >= CPU_CHUNK:
        return fn(*rows) if _whole(model, fn, rows, n) else in_fixed_chunks(fn, *rows)
    # Fewer rows than a chunk (a batch's last episodes): padded to the smallest size that runs whole,
    # a chunk at most, rather than always to a chunk. Padding rows change no other row's bits.
    size = next((m for m in range(n, CPU_CHUNK) if _whole(model, fn, rows, m)), CPU_CHUNK)
    out = fn(*_padded(rows, size))
    return tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n]


def _whole(model: torch.nn.Module, fn: Callable[..., Any], rows: tuple[torch.Tensor, ...], size: int) -> bool:
    """Whether `fn` on a whole batch of `size` rows like `rows` gives in_fixed_chunks' bits, tried
    once on random rows."""
    key = (fn.__code__, size, *((tuple(r.shape[1:]), r.dtype) for r in rows))
    known = _WHOLE.setdefault(model, {})
    if key not in known:
        g = torch.Generator().manual_seed(0)
        probe = tuple(_random_like(r, size, g) for r in rows)
        known[key] = _same(fn(*probe), in_fixed_chunks(fn, *probe))
    return known[key]


def _random_like(rows: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    shape = (size, *rows.shape[1:])
    if rows.dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(rows.dtype)
    return torch.randint(0, 128, shape, generator=g).to(rows.dtype)  # frames: uint8


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@functools.cache
def cpu_kernels() -> str:
    """A fingerprint of how this machine's CPU kernels round: V and M, in small fixed sizes and
    fixed weights, run forwards and backwards; 12 hex digits of the sha256 of every output and
    gradient.

    oneDNN and ATen pick kernels by the CPU's vector instructions (AVX2, AVX-512, ...) and by the
    caps set in the environment (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), and kernels of two
    kinds round differently: a stage resumed on a CPU of another fingerprint does not end with
    the artifacts an uninterrupted run makes. The fingerprint says so from the kernels' results
    themselves, whatever the flags are called. It is computed once per process (about 0.2 s).
    """
    from worldmodels.mdnrnn import MDNRNN
    from worldmodels.vae import ConvVAE

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae, mdnrnn = ConvVAE(32), MDNRNN()
    recon, mu, logvar = vae(torch.rand(CPU_CHUNK, 3, 64, 64, generator=g), torch.randn(CPU_CHUNK, 32, generator=g))
    *outs, _ = mdnrnn(torch.randn(CPU_CHUNK, 4, 32, generator=g), torch.randint(6, (CPU_CHUNK, 4), generator=g))
    sum(t.sum() for t in (recon, mu, logvar, *outs)).backward()
    digest = hashlib.sha256()
    for t in (recon, mu, logvar, *outs, *(p.grad for p in (*vae.parameters(), *mdnrnn.parameters()))):
        digest.update(t.detach().numpy().tobytes())
    return digest.hexdigest()[:12]


def kernels_on(device: torch.device) -> str | None:
    """cpu_kernels() for a stage computing on a CPU; None on a GPU, where no bitwise promise is made."""
    return cpu_kernels() if device.type == "cpu" else None


def kernels_warning(what: str, made: str, here: str) -> str:
    """The warning for work resumed with other CPU kernels than the ones `what` (past tense) was made with."""
    return (f"{what} where the CPU kernels round differently (kernels {made} there, {here} here: another kind of "
            "CPU, other ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY caps, or another number of torch threads); "
            "resuming, but from here the artifacts differ in the last bits from an uninterrupted run's")
