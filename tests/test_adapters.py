"""The places that reach inside a dependency, and the layering that keeps the library apart."""

import ast
import subprocess
import sys

import pytest

from conftest import ROOT, cli_env


def test_zarr_still_has_what_zarr_internals_uses():
    from worldmodels import zarr_internals

    zarr_internals.check()  # a RuntimeError naming what an upgrade removed


def test_submitit_still_has_what_submitit_internals_uses():
    from jobs import submitit_internals

    submitit_internals.check()


def test_cma_still_keeps_its_clocks_where_cma_internals_clears_them():
    from worldmodels import cma_internals

    cma_internals.check()


def test_torch_still_runs_the_int8_convolutions_worldmodels_int8_builds():
    from worldmodels import int8

    int8.check()


def test_two_identical_searches_pickle_to_the_same_bytes_in_any_working_directory(tmp_path, monkeypatch):
    import numpy as np

    from worldmodels import cma_internals

    def search():
        es = cma_internals.new(np.zeros(5), 0.3, {"seed": 3, "verbose": -9})
        for _ in range(4):
            asked = cma_internals.ask(es)
            cma_internals.tell(es, asked, [float(np.sum(x ** 2)) for x in asked])
        return es

    a = search()
    monkeypatch.chdir(tmp_path)
    b = search()  # cma's logger holds the absolute path of a folder in the working directory
    assert a.pickle_dumps() != b.pickle_dumps()  # cma's own pickles carry the clock and that path
    assert cma_internals.dumps(a) == cma_internals.dumps(b)  # and the searches' own random streams no entropy
    resumed = cma_internals.loads(cma_internals.dumps(a))
    assert np.array_equal(cma_internals.ask(resumed), cma_internals.ask(a))


def test_a_search_of_the_controllers_size_resumed_from_its_pickle_asks_what_the_uninterrupted_one_asks():
    # from 300 parameters on cma's TPA step-size rule draws from numpy's global RandomState in every
    # tell, which a pickled strategy's private copy no longer follows: resumed searches drifted
    import cma
    import numpy as np

    from worldmodels import cma_internals

    opts = {"popsize": 6, "seed": 3, "verbose": -9}

    def search(cut=None, others_draw=False):
        es, asked = cma_internals.new(np.zeros(320), 0.5, opts), []
        for generation in range(8):
            if generation == cut:
                es = cma_internals.loads(cma_internals.dumps(es))
            asked.append(np.asarray(cma_internals.ask(es)))
            cma_internals.tell(es, list(asked[-1]), [float(x @ x) for x in asked[-1]])
            if others_draw:
                np.random.rand()  # anything else in the process that draws from numpy's global stream
        return asked

    plain = cma.CMAEvolutionStrategy(np.zeros(320), 0.5, opts)  # cma alone, in one process
    before = []
    for _ in range(8):
        before.append(np.asarray(plain.ask()))
        plain.tell(list(before[-1]), [float(x @ x) for x in before[-1]])
    for run in (search(), search(cut=5), search(cut=1, others_draw=True)):
        assert all(np.array_equal(a, b) for a, b in zip(run, before))
    with pytest.raises(ValueError, match="cma_internals.new"):
        cma_internals.ask(cma.CMAEvolutionStrategy(np.zeros(3), 0.5, {"verbose": -9}))


def test_the_library_never_imports_the_job_layer_nor_the_command_line():
    for path in sorted((ROOT / "worldmodels").glob("*.py")):
        if path.name == "__main__.py":  # `python -m worldmodels` starts the command line
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if n.split(".")[0] in ("jobs", "cli", "submitit")]
            assert not bad, f"{path.name} imports {bad}"
    # and at run time: importing every module of the library loads neither
    code = ("import pkgutil, importlib, sys, worldmodels\n"
            "for m in pkgutil.iter_modules(worldmodels.__path__):\n"
            "    if m.name != '__main__': importlib.import_module('worldmodels.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('jobs', 'cli', 'submitit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True).stdout
    assert out.strip() == "[]"
