"""The places that reach inside a dependency, and the layering that keeps the library apart."""

import ast
import subprocess
import sys

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


def test_two_identical_searches_pickle_to_the_same_bytes():
    import cma
    import numpy as np

    from worldmodels import cma_internals

    def search():
        es = cma.CMAEvolutionStrategy(np.zeros(5), 0.3, {"seed": 3, "verbose": -9})
        for _ in range(4):
            asked = es.ask()
            es.tell(asked, [float(np.sum(x ** 2)) for x in asked])
        return es

    a, b = search(), search()
    assert a.pickle_dumps() != b.pickle_dumps()  # cma's own pickles carry the clock
    assert cma_internals.dumps(a) == cma_internals.dumps(b)
    resumed = cma_internals.loads(cma_internals.dumps(a))
    assert np.array_equal(resumed.ask(), a.ask())


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
