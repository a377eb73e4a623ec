"""The one place that reaches inside cma (pinned at 4.5.0): its state without wall-clock times.

A pickled `CMAEvolutionStrategy` carries `cma.utilities.utils.ElapsedWCTime` timers (the
strategy's own `timer`, its logger's `timer_all` and `timer_plot`) that hold `time.time()`
readings, so two identical runs would write different checkpoint bytes. `dumps` pickles the
strategy with every such timer reset to zero and `loads` restarts them; the timers only serve
cma's display and its `timeout` option, which this project leaves at infinity.

`check()` says in one line what an upgrade changed; tests/test_adapters.py runs it.
"""

from __future__ import annotations

import pickle
from typing import Any

USED = "cma.utilities.utils.ElapsedWCTime timers on CMAEvolutionStrategy and its logger"
_TIME_FIELDS = ("cum_time", "paused", "last_tic", "_last_toc", "_time_at_reset", "_time_at_creation")


def _timers(es: Any) -> list[Any]:
    from cma.utilities.utils import ElapsedWCTime

    found = []
    for owner in (es, getattr(es, "logger", None)):
        found += [v for v in vars(owner).values() if isinstance(v, ElapsedWCTime)] if owner is not None else []
    return found


def dumps(es: Any) -> bytes:
    """The strategy's pickle, the same bytes for the same search whenever it ran."""
    timers = _timers(es)
    saved = [{name: getattr(t, name) for name in _TIME_FIELDS} for t in timers]
    try:
        for t in timers:
            for name in _TIME_FIELDS:
                setattr(t, name, 0)
        return es.pickle_dumps()
    finally:
        for t, fields in zip(timers, saved):
            for name, value in fields.items():
                setattr(t, name, value)


def loads(data: bytes) -> Any:
    """The strategy `dumps` wrote, its timers started now."""
    es = pickle.loads(data)
    for t in _timers(es):
        t.reset()
    return es


def check() -> None:
    """Raise RuntimeError when this cma's timers are not where `dumps` resets them."""
    import cma
    import numpy as np

    def search() -> Any:
        es = cma.CMAEvolutionStrategy(np.zeros(3), 0.5, {"seed": 1, "verbose": -9})
        asked = es.ask()
        es.tell(asked, [float(x @ x) for x in asked])
        return es

    first, second = search(), search()
    timers = _timers(first)
    if not timers or not all(hasattr(t, name) for t in timers for name in _TIME_FIELDS):
        raise RuntimeError(f"cma {cma.__version__} lacks what worldmodels/cma_internals.py uses: {USED}")
    if dumps(first) != dumps(second):
        raise RuntimeError(f"cma {cma.__version__}: a pickled CMAEvolutionStrategy holds times outside {USED}")
