"""The one place that reaches inside cma (pinned at 4.5.0): its state without wall-clock times and
laid out alike however it was made, and a random stream of its own.

A pickled `CMAEvolutionStrategy` carries `cma.utilities.utils.ElapsedWCTime` timers (the
strategy's own `timer`, its logger's `timer_all` and `timer_plot`) that hold `time.time()`
readings, so two identical runs would write different checkpoint bytes. `dumps` pickles the
strategy with every such timer reset to zero and `loads` restarts them; the timers only serve
cma's display and its `timeout` option, which this project leaves at infinity. Its logger's
`name_prefix` is the absolute path of the folder cma would write its logs to (none here:
`verbose` is -9), made from the working directory: `dumps` pickles the prefix as given
(`verb_filenameprefix`), and `loads` makes it absolute again, as cma does.

pickle writes an object once and refers back to it after, so equal strings and numpy dtypes are
written once or many times as they are one object or many. A strategy read back from its
checkpoint holds copies (unpickled dict keys, dtypes) where one made in this process shares one
object, and its pickle would be laid out otherwise from the uninterrupted search's. `dumps`
writes every string and every plain dtype by value, so a resumed search writes the bytes the
uninterrupted one writes.

cma samples through its `randn` option, by default a method of numpy's global RandomState, which
it seeds from its `seed` option; and from 300 parameters on (the controller has 1,734) its TPA
step-size rule also draws from that global RandomState directly, in every `tell`. In one process
both read one stream. A pickled strategy, though, comes back with a private copy of the
RandomState, which TPA's draws no longer reach: a search resumed from its checkpoint asked other
candidates than the uninterrupted search from its second generation on. So a strategy made by
`new` keeps a RandomState of its own (pickled with it), nothing else in the process draws from
it, and for each `ask` and `tell` it stands in for numpy's global one: every search, resumed or
not, reads the stream an uninterrupted search in one process reads.

`check()` says in one line what an upgrade changed; tests/test_adapters.py runs it.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import tempfile
from typing import Any, Callable

import numpy as np

USED = ("cma.utilities.utils.ElapsedWCTime timers on CMAEvolutionStrategy and its logger; its logger's `name_prefix`; "
        "its sampler's `randn` and its `randn` option, both a method of numpy's global RandomState; "
        "the standard library's pure-Python pickler, `pickle._Pickler.save`")
_TIME_FIELDS = ("cum_time", "paused", "last_tic", "_last_toc", "_time_at_reset", "_time_at_creation")


def _timers(es: Any) -> list[Any]:
    from cma.utilities.utils import ElapsedWCTime

    found = []
    for owner in (es, getattr(es, "logger", None)):
        found += [v for v in vars(owner).values() if isinstance(v, ElapsedWCTime)] if owner is not None else []
    return found


class _ByValue(pickle._Pickler):
    """The pure-Python pickler (the C one has no hook before its memo) with each string and plain
    dtype swapped for its one canonical object before it is written or referred back to."""

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if type(obj) is str:
            obj = sys.intern(obj)
        elif isinstance(obj, np.dtype) and obj.fields is None and obj.subdtype is None and obj.metadata is None:
            obj = np.dtype(obj.str)  # an unpickled dtype is a copy, not numpy's own (isbuiltin 0)
        super().save(obj, save_persistent_id)


def dumps(es: Any) -> bytes:
    """The strategy's pickle, the same bytes for the same search whenever and wherever it ran."""
    timers = _timers(es)
    saved = [{name: getattr(t, name) for name in _TIME_FIELDS} for t in timers]
    logger = getattr(es, "logger", None)
    prefix = logger.name_prefix if logger is not None else None
    try:
        for t in timers:
            for name in _TIME_FIELDS:
                setattr(t, name, 0)
        if logger is not None:
            logger.name_prefix = es.opts["verb_filenameprefix"]
        out = io.BytesIO()
        _ByValue(out, pickle.DEFAULT_PROTOCOL).dump(es)
        return out.getvalue()
    finally:
        for t, fields in zip(timers, saved):
            for name, value in fields.items():
                setattr(t, name, value)
        if logger is not None:
            logger.name_prefix = prefix


def loads(data: bytes) -> Any:
    """The strategy `dumps` wrote, its timers started now, its logger's prefix made absolute (and
    its RandomState its own, as pickled)."""
    es = pickle.loads(data)
    for t in _timers(es):
        t.reset()
    if getattr(es, "logger", None) is not None:
        es.logger.name_prefix = os.path.abspath(es.logger.name_prefix)
    return es


def new(x0: Any, sigma0: float, opts: dict[str, Any]) -> Any:
    """cma.CMAEvolutionStrategy(x0, sigma0, opts) with a RandomState of its own, seeded as cma seeds
    numpy's global one (opts["seed"]); ask and tell it through `ask` and `tell`."""
    import cma

    es = cma.CMAEvolutionStrategy(x0, sigma0, opts)
    # seeded, unlike RandomState(), it keeps no entropy from the OS, which its pickle would carry
    own = np.random.RandomState(0)
    own.set_state(np.random.get_state())
    _draw_from(es, own)
    return es


def ask(es: Any) -> list[np.ndarray]:
    return _in_own_stream(es, es.ask)


def tell(es: Any, solutions: list[np.ndarray], values: list[float]) -> None:
    _in_own_stream(es, lambda: es.tell(solutions, values))


def _draw_from(es: Any, state: np.random.RandomState) -> None:
    es.sm.randn = es.opts["randn"] = state.randn


def _in_own_stream(es: Any, call: Callable[[], Any]) -> Any:
    """`call()` with the strategy's RandomState standing in for numpy's global one (see above)."""
    own = es.sm.randn.__self__
    if own is np.random.mtrand._rand:
        raise ValueError("this CMAEvolutionStrategy draws from numpy's global RandomState: make it with cma_internals.new")
    outside = np.random.get_state()
    np.random.set_state(own.get_state())
    _draw_from(es, np.random.mtrand._rand)
    try:
        return call()
    finally:
        own.set_state(np.random.get_state())
        _draw_from(es, own)
        np.random.set_state(outside)


def check() -> None:
    """Raise RuntimeError when this cma's timers or log path are not where `dumps` resets them, or
    its random draws not where `new` gives it a stream of its own."""
    import cma

    fresh = cma.CMAEvolutionStrategy(np.zeros(3), 0.5, {"seed": 1, "verbose": -9})
    if not (getattr(getattr(fresh, "sm", None), "randn", None) == np.random.randn == fresh.opts.get("randn")):
        raise RuntimeError(f"cma {cma.__version__} samples elsewhere than worldmodels/cma_internals.py expects: {USED}")

    def search() -> Any:
        es = cma.CMAEvolutionStrategy(np.zeros(3), 0.5, {"seed": 1, "verbose": -9})
        asked = es.ask()
        es.tell(asked, [float(x @ x) for x in asked])
        return es

    first = search()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as elsewhere:  # the same search, made in another working directory
        try:
            os.chdir(elsewhere)
            second = search()
        finally:
            os.chdir(here)
    timers = _timers(first)
    if not timers or not all(hasattr(t, name) for t in timers for name in _TIME_FIELDS) \
            or not isinstance(getattr(getattr(first, "logger", None), "name_prefix", None), str):
        raise RuntimeError(f"cma {cma.__version__} lacks what worldmodels/cma_internals.py uses: {USED}")
    if dumps(first) != dumps(second):
        raise RuntimeError(f"cma {cma.__version__}: a pickled CMAEvolutionStrategy holds times or paths outside {USED}")

    def resumed(cut: int | None) -> bytes:
        """Three generations through `new`, `ask` and `tell`, read back from `dumps` after generation `cut`."""
        es = new(np.zeros(3), 0.5, {"seed": 1, "verbose": -9})
        for generation in range(3):
            if generation == cut:
                es = loads(dumps(es))
            asked = ask(es)
            tell(es, asked, [float(x @ x) for x in asked])
        return dumps(es)

    if resumed(None) != resumed(1):
        raise RuntimeError(f"cma {cma.__version__}: a search read back from its pickle pickles otherwise than the "
                           "uninterrupted one (worldmodels/cma_internals.py writes strings and dtypes by value)")
