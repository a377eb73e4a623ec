"""Experiments: stage identities, branches that reuse a finished run read-only, sweeps, comparisons."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SMOKE, cli_env, run_cli, tree_digest
from worldmodels import config, identity
from worldmodels.checkpoint import Checkpointer, load_file
from worldmodels.errors import ConfigError
from worldmodels.stages import chain

BRANCH = ["controller.mode=dream", "controller.seed=3"]


def run_cli_with_readonly(base: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m worldmodels ARGS` with BASE mounted read-only (a private mount namespace): any write
    into it fails, even as root."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script, str(base), sys.executable, "-m", "worldmodels",
                           *map(str, args)], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, f"worldmodels {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def status(run: Path) -> dict:
    return json.loads(run_cli("status", run, "--json").stdout)["stages"]


def last(run: Path, name: str) -> dict:
    directory = run / "checkpoints" / name
    return load_file(directory / f"step-{Checkpointer(directory, every_steps=1, every_s=1, keep=1).steps()[-1]:09d}.pt")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished smoke run: what the branches reuse."""
    run = tmp_path_factory.mktemp("base") / "run"
    for stage in chain("evaluate"):
        run_cli(stage, "--config", SMOKE, "--run-dir", run)
    return run


@pytest.fixture(scope="module")
def branch(base, tmp_path_factory):
    """A branch of `base` with the controller trained in the dream with another seed, BASE read-only."""
    run = tmp_path_factory.mktemp("branch") / "run"
    before = tree_digest(base)
    procs = [run_cli_with_readonly(base, stage, "--config", SMOKE, "--run-dir", run, "--from", base, *BRANCH)
             for stage in ("train-controller", "evaluate")]
    # the first stage that differs from BASE's says so, and why
    assert f"--from {base}: train-controller runs here, its config differs from there (controller.mode: 'real' -> 'dream'; " \
        "controller.seed: 7 -> 3)" in procs[0].stderr, procs[0].stderr
    assert "collect runs here" not in procs[0].stderr
    proc = procs[1]
    # the baselines' episodes are the base's games: taken, not played again (3 baselines x 4 episodes x 2 protocols)
    assert f"24 baseline episodes taken from {base.resolve()}" in proc.stderr, proc.stderr
    assert tree_digest(base) == before  # never written
    return run


def test_a_branch_reuses_the_upstream_stages_by_reference_and_runs_only_its_own(base, branch):
    stages = status(branch)
    for stage in chain("train-mdnrnn"):
        assert stages[stage]["state"] == "done" and stages[stage]["reused_from"] == str(base.resolve()), stage
    for stage in ("train-controller", "evaluate"):
        assert stages[stage]["state"] == "done" and "reused_from" not in stages[stage], stage
    assert not (branch / "data").exists() and sorted(p.name for p in (branch / "checkpoints").iterdir()) == ["controller"]
    assert sorted(p.name for p in (branch / "state").iterdir()) == ["evaluate.json", "train-controller.json"]  # nothing else ran
    table = run_cli("status", branch).stdout
    assert f"reused from {base.resolve()}" in table


def test_a_branch_ends_with_what_a_run_from_scratch_of_its_config_makes(branch, tmp_path):
    scratch = tmp_path / "scratch"
    for stage in chain("evaluate"):
        run_cli(stage, "--config", SMOKE, "--run-dir", scratch, *BRANCH)
    a, b = last(scratch, "controller"), last(branch, "controller")
    assert a["history"] == b["history"] and torch.equal(a["mean"], b["mean"])
    results = [json.loads((r / "eval" / "results.json").read_text()) for r in (scratch, branch)]
    assert results[0]["seeds"] == results[1]["seeds"]
    assert results[0]["protocols"] == results[1]["protocols"]  # the baselines the branch took included


def test_a_branch_of_a_branch_reuses_each_stage_from_the_run_that_made_it(base, branch, tmp_path):
    twig = tmp_path / "twig"
    before = tree_digest(branch)
    proc = run_cli_with_readonly(branch, "evaluate", "--config", SMOKE, "--run-dir", twig, "--from", branch, *BRANCH,
                                 "evaluate.seed=11")
    assert "baseline episodes taken" not in proc.stderr  # other games: the baselines play them
    stages = status(twig)
    assert stages["train-mdnrnn"]["reused_from"] == str(base.resolve())
    assert stages["train-controller"]["reused_from"] == str(branch.resolve())
    assert "reused_from" not in stages["evaluate"] and stages["evaluate"]["state"] == "done"
    assert tree_digest(branch) == before
    ours, theirs = (json.loads((r / "eval" / "results.json").read_text()) for r in (twig, branch))
    assert ours["controller"] == theirs["controller"] and ours["seeds"] != theirs["seeds"]  # same C, other episodes


def test_rerunning_a_reused_stage_in_a_branch_does_nothing(base, branch):
    proc = run_cli_with_readonly(base, "train-vae", "--run-dir", branch)
    assert "reused from" in proc.stdout


def test_a_changed_identity_is_refused_naming_the_stage_and_key_and_how_to_branch(base):
    before = tree_digest(base)
    proc = run_cli("train-controller", "--config", SMOKE, "--run-dir", base, "vae.lr=0.5", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "train-vae in" in proc.stderr and "vae.lr: 0.0001 -> 0.5" in proc.stderr and f"--from {base}" in proc.stderr
    # nor may an earlier stage's start save other values for a later one that ran (config.yaml would say them)
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", base, "controller.generations=50", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "train-controller in" in proc.stderr and "controller.generations: 3 -> 50" in proc.stderr
    assert tree_digest(base) == before


def test_values_of_a_stage_that_has_made_nothing_yet_may_change(tmp_path):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    identity.begin(config.load(SMOKE), run, "report")  # as `submit` does: every stage's identity recorded
    proc = run_cli("train-vae", "--config", SMOKE, "--run-dir", run, "vae.steps=4", "controller.popsize=6")
    assert "finished at step 4" in proc.stdout


def test_from_a_missing_unfinished_or_older_base_is_refused(base, tmp_path):
    def refused(base_dir: Path, message: str) -> None:
        proc = run_cli("train-controller", "--config", SMOKE, "--run-dir", tmp_path / "new", "--from", base_dir, check=False)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr

    refused(tmp_path / "nothing", "not a run directory")
    proc = run_cli("sweep", "--config", SMOKE, "--sweep-dir", tmp_path / "sweep", "--from", tmp_path / "nothing",
                   "--grid", "controller.seed=1,2", check=False)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr and not (tmp_path / "sweep").exists()
    partial = tmp_path / "partial"
    run_cli("collect", "--config", SMOKE, "--run-dir", partial)
    refused(partial, "its train-vae has this identity but is not finished")
    proc = run_cli("sweep", "--config", SMOKE, "--sweep-dir", tmp_path / "sweep", "--from", partial,
                   "--grid", "controller.seed=1,2", check=False)  # refused before any point runs or is written
    assert proc.returncode == 2 and "its train-vae has this identity but is not finished" in proc.stderr
    assert not (tmp_path / "sweep").exists()
    older = tmp_path / "older"
    older.mkdir()
    (older / "config.yaml").write_text((base / "config.yaml").read_text())
    refused(older, "another version of worldmodels")
    (older / "stages").mkdir()
    (older / "stages" / "collect.json").write_text(json.dumps({"format": 1, "identity": {}}))
    refused(older, "run format 1")
    assert not (tmp_path / "new" / "checkpoints").exists()


def test_the_identity_of_a_stage_holds_its_upstream_and_no_operational_setting():
    from worldmodels.identity import OPERATIONAL, identity

    cfg = config.load(SMOKE)
    controller, mdnrnn = identity(cfg, "train-controller"), identity(cfg, "train-mdnrnn")
    assert set(mdnrnn) < set(controller) and "mdnrnn.tau" in controller and "mdnrnn.tau" not in mdnrnn
    assert controller["controller.seed"] == cfg.seed and "vae.lr" in controller and "evaluate.episodes" not in controller
    assert not OPERATIONAL & set(identity(cfg, "report"))
    assert all(key in config.flat(config.to_dict(cfg)) for key in OPERATIONAL)


def test_a_key_added_since_the_run_format_changes_identities_only_away_from_its_old_behaviour():
    from worldmodels.identity import ADDED_SINCE_FORMAT, identity

    cfg = config.load(SMOKE)
    # the evaluation's default gained the sticky protocol on purpose: an old run's evaluation is not
    # today's (a branch re-evaluates); evaluate.protocols=[v4] still resumes and branches it
    changed = {"evaluate.protocols"}
    assert all(config.flat(config.to_dict(cfg))[key] == value for key, value in ADDED_SINCE_FORMAT.items() if key not in changed)
    assert set(ADDED_SINCE_FORMAT) & set(identity(cfg, "report")) == changed  # runs made before the others keep their identity
    old = config.load(SMOKE, ["evaluate.protocols=[v4]"])
    assert "evaluate.protocols" not in identity(old, "evaluate") and "evaluate.protocols" in identity(cfg, "evaluate")
    sticky = identity(config.load(SMOKE, ["env.repeat_action_probability=0.25"]), "collect")
    assert sticky["env.repeat_action_probability"] == 0.25 and sticky != identity(cfg, "collect")
    # V's precision belongs to encode: a run that tries V in int8 reuses the float run's V (--from)
    int8 = config.load(SMOKE, ["vae.precision=int8"])
    assert identity(int8, "train-vae") == identity(cfg, "train-vae") and identity(int8, "encode")["vae.precision"] == "int8"


def test_named_random_streams_never_share_a_seed():
    from worldmodels import seeds

    cfg = config.load(SMOKE)
    numbers = [number for number, _ in seeds.STREAMS.values()]
    assert len(set(numbers)) == len(numbers)
    drawn = {}
    for name, (_, indices) in seeds.STREAMS.items():
        for k in range(3 if indices else 1):
            drawn[(name, k)] = seeds.seed(cfg, name, *[k] * len(indices))
    assert len(set(drawn.values())) == len(drawn)
    other = config.load(SMOKE, ["controller.seed=99"])
    assert seeds.seed(other, "controller.cma") != seeds.seed(cfg, "controller.cma")
    assert seeds.seed(other, "collect.env", 1) == seeds.seed(cfg, "collect.env", 1)  # upstream untouched


def test_a_local_sweep_branches_every_point_and_compare_gives_each_point_its_interval(base, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["sweep", "--config", SMOKE, "--sweep-dir", sweep, "--from", base,
            "--grid", "controller.sigma0=0.1,0.5", "controller.seed=1,2"]
    run_cli(*args, timeout=600)
    points = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert points == ["sigma0=0.1_seed=1", "sigma0=0.1_seed=2", "sigma0=0.5_seed=1", "sigma0=0.5_seed=2"]
    for point in points:
        stages = status(sweep / point)
        assert stages["train-mdnrnn"]["reused_from"] == str(base.resolve()) and stages["report"]["state"] == "done"
    view = json.loads(run_cli("status", sweep, "--json").stdout)["sweep"]
    assert set(view["points"]) == set(points)
    run_cli(*args)  # a rerun finds every point finished
    proc = run_cli("compare", sweep)
    out = sweep / "compare"
    assert str(out / "index.html") in proc.stdout
    summary = json.loads((out / "results.json").read_text())
    assert summary["seed_keys"] == ["controller.seed"] and summary["setting_keys"] == ["controller.sigma0"]
    assert [p["point"] for p in summary["points"]] == ["controller.sigma0=0.1", "controller.sigma0=0.5"]
    for p in summary["points"]:
        assert len(p["runs"]) == len(p["scores"]) == 2
        assert p["ci_low"] <= p["mean"] <= p["ci_high"] and min(p["scores"]) <= p["ci_low"] <= p["ci_high"] <= max(p["scores"])
        assert set(p["baselines"]) == {"random", "always_fire", "sweep_fire"} and len(p["curve"]["mean"]) == 3
    page = (out / "index.html").read_text()
    assert "95% CI" in page and "scores.png" in page and (out / "scores.png").stat().st_size > 1000
    # round 0 of a config with more rounds, and another number of videos: the same scores' settings
    other = Path(shutil.copytree(sweep / points[0], tmp_path / "two-rounds"))
    (other / "config.yaml").write_text(config.dump(config.load(other / "config.yaml", ["rounds.count=2", "evaluate.videos=3"])))
    run_cli("compare", sweep / points[0], sweep / points[1], other, "--out", tmp_path / "grouped")
    grouped = json.loads((tmp_path / "grouped" / "results.json").read_text())
    assert grouped["setting_keys"] == [] and len(grouped["points"]) == 1 and len(grouped["points"][0]["runs"]) == 3
    # another run seed: the stage seeds that follow it are not listed beside it
    reseeded = Path(shutil.copytree(sweep / points[0], tmp_path / "reseeded"))
    (reseeded / "config.yaml").write_text(config.dump(config.load(reseeded / "config.yaml", ["seed=5"])))
    run_cli("compare", sweep / points[0], sweep / points[1], reseeded, "--out", tmp_path / "reseeded-compare")
    assert json.loads((tmp_path / "reseeded-compare" / "results.json").read_text())["seed_keys"] == ["controller.seed", "seed"]
    proc = run_cli(*args[:-1], "controller.seed=1,2,3", check=False)  # another grid for the same folder
    assert proc.returncode == 2 and "made with other settings" in proc.stderr
    # the same grid in another order would name other folders (seed=1_sigma0=0.1)
    proc = run_cli(*args[:-2], "controller.seed=1,2", "controller.sigma0=0.1,0.5", check=False)
    assert proc.returncode == 2 and "made with other settings (grid)" in proc.stderr
    # a sweep folder is no run directory, nor the reverse; a value twice in a grid is a mistake
    before = tree_digest(base), tree_digest(sweep)
    for command, message in [(["collect", "--config", SMOKE, "--run-dir", sweep], "is a sweep folder"),
                             (["verify", sweep], "is a sweep folder: verify each of its points"),
                             (["verify", tmp_path / "grouped"], "is not a run directory"),
                             (["compare", sweep, "--out", sweep / points[0] / "eval"], "lies in the run directory"),
                             (["push", "--run-dir", sweep / points[0], "--dry-run", base], "lies in the run directory"),
                             (["compare", sweep, "--out", "/proc/compare"], "error: /proc/compare: "),  # unwritable
                             (["sweep", "--config", SMOKE, "--sweep-dir", base, "--grid", "controller.seed=1,2"],
                              "is a run directory"),
                             (["sweep", "--config", SMOKE, "--sweep-dir", tmp_path / "s2", "--grid", "controller.seed=1,1"],
                              "give the same config"),
                             (["sweep", "--config", SMOKE, "--sweep-dir", tmp_path / "s2", "--grid", "controller.seed=1,01"],
                              "grid points seed=1 and seed=01 give the same config")]:
        proc = run_cli(*command, check=False)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert (tree_digest(base), tree_digest(sweep)) == before and not (tmp_path / "s2").exists()


def test_a_sweep_saved_before_a_config_key_was_added_is_the_same_sweep_at_the_value_it_behaved_as(tmp_path):
    from worldmodels.sweep import SWEEP_FILE, Sweep

    cfg, grid, folder = config.load(SMOKE), ["controller.seed=1,2"], tmp_path / "sweep"
    Sweep.define(folder, cfg, grid).save()
    saved = json.loads((folder / SWEEP_FILE).read_text())
    del saved["config"]["controller"]["inputs"]  # as saved before controller.inputs existed (behaving as zh)
    (folder / SWEEP_FILE).write_text(json.dumps(saved))
    Sweep.define(folder, cfg, grid)
    with pytest.raises(ConfigError, match=r"controller.inputs: 'zh' \(saved\) != 'z'"):
        Sweep.define(folder, config.override(cfg, ["controller.inputs=z"]), grid)
    del saved["config"]["vae"]["lr"]  # a key that always existed
    (folder / SWEEP_FILE).write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="vae.lr"):
        Sweep.define(folder, cfg, grid)


def test_grids_given_with_several_grid_flags_add_up():
    from cli.main import build_parser

    args = build_parser().parse_args(["sweep", "--sweep-dir", "s", "--grid", "controller.seed=1,2", "--grid", "vae.lr=0.1,0.2"])
    assert args.grid == ["controller.seed=1,2", "vae.lr=0.1,0.2"]


def test_the_bootstrap_interval_and_the_iqm_follow_their_definitions():
    from worldmodels.compare import bootstrap_ci, iqm

    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == 4.5  # the middle half: 3, 4, 5, 6
    low, high = bootstrap_ci([10.0, 20.0, 30.0, 40.0])
    assert 10 < low < 25 < high < 40
    assert bootstrap_ci([5.0]) == (5.0, 5.0) and bootstrap_ci([7.0, 7.0]) == (7.0, 7.0)
