"""`python -m worldmodels COMMAND ...`: the stages, and the commands around them.

    python -m worldmodels STAGE --config configs/NAME.yaml --run-dir DIR [--from BASE] [--round R] [key.sub=value ...]
    python -m worldmodels submit STAGE|pipeline --config C --run-dir DIR --profile P [--from BASE] [--round R]
    python -m worldmodels sweep --config C --sweep-dir DIR [--from BASE] --grid key=a,b key=1,2,3
    python -m worldmodels compare SWEEP_DIR_OR_RUNS... [--out DIR]
    python -m worldmodels status DIR [--json]
    python -m worldmodels verify DIR [--repair]
    python -m worldmodels stages [--plain]
    python -m worldmodels rounds --config C [key.sub=value ...]
    python -m worldmodels push --run-dir DIR --repo-id USER/NAME | --dry-run FOLDER
    python -m worldmodels play --model FOLDER|RUN_DIR|USER/NAME [--episodes N] [--video OUT.mp4] [--sticky]

The command line sits above both the library (worldmodels/, which never imports the job layer) and
the Slurm layer (jobs/). Every stage runs in-process and resumes when rerun with the same arguments.
Errors a user can fix are printed as one line and exit 2; an interrupted stage exits 75 (rerun to
resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from worldmodels.errors import ERROR_EXIT_CODE, Interrupted, WorldModelsError, one_line
from worldmodels.preemption import REQUEUE_EXIT_CODE
from worldmodels.pipeline import run_stage
from worldmodels.rundir import CHECKPOINTS
from worldmodels.stages import STAGES

FROM_HELP = "branch from the run directory BASE: reuse its finished stages whose identity matches (read-only)"
ROUND_HELP = ("run round R of iterative training (rounds.count > 1): in RUN_DIR/rounds/R, continuing round R-1 "
              "(default 0: RUN_DIR itself)")


def _config_args(p: argparse.ArgumentParser, run_dir: bool = True) -> None:
    p.add_argument("--config", type=Path, help="preset YAML (default: the run directory's saved config.yaml)")
    if run_dir:
        p.add_argument("--run-dir", type=Path, required=True, help="the run directory (created, or resumed)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. collect.episodes=8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldmodels", description="World Models for Atari Space Invaders: "
                                     "every stage is a resumable batch job over a run directory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        _config_args(p)
        p.add_argument("--from", dest="base", type=Path, metavar="BASE", help=FROM_HELP)
        p.add_argument("--round", type=int, default=0, metavar="R", help=ROUND_HELP)
        if stage.name in CHECKPOINTS:
            p.add_argument("--restart", action="store_true", help="set the stage's checkpoints aside (kept, renamed) "
                           "and train it from the start, e.g. when none of them verifies")
        if stage.tasks:
            p.add_argument("--task", type=int, default=0, help="which task to run (episodes k with k %% num-tasks == task)")
            p.add_argument("--num-tasks", type=int, default=1, help="how many tasks share the episodes (default 1: all)")

    p = sub.add_parser("push", help="upload models, results, report and a model card to the Hugging Face Hub")
    _config_args(p)
    p.add_argument("--repo-id", help="the Hub repository, e.g. user/worldmodels-spaceinvaders")
    p.add_argument("--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded to DIR instead")

    p = sub.add_parser("play", help="load an agent (pushed folder, run directory or Hub repo) and play the evaluation's episodes")
    p.add_argument("--model", required=True, metavar="FOLDER|RUN_DIR|USER/NAME", help="where the agent is")
    p.add_argument("--episodes", type=int, default=3, help="how many evaluation episodes to play, from episode 0 (default 3)")
    p.add_argument("--video", type=Path, metavar="OUT.mp4", help="also record episode 0 to this file")
    p.add_argument("--sticky", action="store_true", help="play under the sticky-actions protocol (repeat the previous "
                   "action with probability 0.25) instead of the evaluation's first protocol")

    p = sub.add_parser("submit", help="submit a stage (or `pipeline`: every stage of every round from --round R on, chained) "
                       "to Slurm through submitit")
    p.add_argument("stage", metavar="STAGE", help=f"{', '.join(STAGES)} or pipeline")
    _config_args(p)
    p.add_argument("--from", dest="base", type=Path, metavar="BASE", help=FROM_HELP)
    p.add_argument("--profile", type=Path, required=True, help="where to run: a YAML file in slurm/profiles/")
    p.add_argument("--round", type=int, default=0, metavar="R", help=ROUND_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch scripts instead of submitting")
    p.add_argument("--container", metavar="IMAGE", help="run the jobs inside this image (an Apptainer .sif, or a "
                   "Docker/Podman image name) through containers/run.sh")

    p = sub.add_parser("sweep", help="one run per point of a grid of settings and seeds, locally or as Slurm arrays")
    _config_args(p, run_dir=False)
    p.add_argument("--sweep-dir", type=Path, required=True, help="the sweep folder: one run directory per point")
    p.add_argument("--grid", nargs="+", action="extend", required=True, metavar="key=a,b",
                   help="values to sweep, e.g. controller.seed=1,2,3 (repeatable)")
    p.add_argument("--from", dest="base", type=Path, metavar="BASE", help="branch every point from BASE")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: every point here, in sequence; slurm: one array job per stage across the points")
    p.add_argument("--profile", type=Path, help="where to run on Slurm (with --executor slurm)")
    p.add_argument("--container", metavar="IMAGE", help="run the Slurm jobs inside this image")

    p = sub.add_parser("compare", help="mean, 95%% bootstrap confidence interval and IQM over seeds, per point")
    p.add_argument("dirs", nargs="+", type=Path, metavar="SWEEP_DIR_OR_RUN", help="sweep folders or run directories")
    p.add_argument("--out", type=Path, help="where index.html and results.json go (default: SWEEP_DIR/compare)")

    p = sub.add_parser("stages", help="list the stages in pipeline order: how each runs and what it reads")
    p.add_argument("--plain", action="store_true", help="one 'NAME KIND' line each (KIND: tasks, mpi or single), for scripts")

    p = sub.add_parser("rounds", help="list the rounds of iterative training a config has (0 .. rounds.count-1), for scripts")
    _config_args(p, run_dir=False)

    p = sub.add_parser("status", help="show where each stage of a run directory (or each point of a sweep) stands")
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run directory or a sweep folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    p = sub.add_parser("verify", help="read back every dataset chunk and checkpoint of a run and say what is damaged")
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run directory")
    p.add_argument("--repair", action="store_true",
                   help="drop damaged episodes and set damaged checkpoints aside, so that rerunning their stages makes them again")
    return parser


def resolve_config(args: argparse.Namespace, run_dir: Path | None):
    """The config of a command: the preset plus overrides, or the run directory's saved one plus overrides."""
    from worldmodels import config as config_lib
    from worldmodels.errors import ConfigError
    from worldmodels.rundir import RunDir

    if args.config is not None:
        return config_lib.load(args.config, args.overrides)
    saved = RunDir(run_dir).saved_config() if run_dir is not None else None
    if saved is None:
        where = f"{run_dir} has no saved config.yaml yet" if run_dir is not None else "a new sweep needs its config"
        raise ConfigError(f"--config is required: {where}")
    return config_lib.override(saved, args.overrides)


def kind(stage) -> str:
    return "tasks" if stage.tasks else "mpi" if stage.mpi else "single"


def run(args: argparse.Namespace) -> int:
    if args.command == "stages":
        for stage in STAGES.values():
            print(f"{stage.name} {kind(stage)}" if args.plain else
                  f"{stage.name:<17} {kind(stage):<7} reads {', '.join(stage.upstream) or 'the game':<17} {stage.help}")
        return 0
    if args.command == "status":
        from cli.views import print_status

        print_status(args.run_dir, as_json=args.json)
        return 0
    if args.command == "verify":
        from worldmodels.verify import verify

        problems, notes, sound = verify(args.run_dir, repair=args.repair)
        for line in problems:
            print(f"damaged: {line}")
        for line in notes:
            print(line)
        print(f"verify: {'sound' if sound else 'damaged'} ({len(problems)} problems{', repaired' if problems and sound else ''})")
        return 0 if sound else 1
    if args.command == "compare":
        from worldmodels.compare import compare

        print(f"compare: {compare(args.dirs, args.out)}")
        return 0
    if args.command == "sweep":
        from worldmodels import config as config_lib
        from worldmodels.sweep import Sweep

        if args.config is None and Sweep.is_sweep(args.sweep_dir):  # resuming: the sweep's own config
            cfg = config_lib.override(Sweep.open(args.sweep_dir).config, args.overrides)
        else:
            cfg = resolve_config(args, None)
        sweep = Sweep.define(args.sweep_dir, cfg, args.grid, base=args.base)
        if args.executor == "slurm":
            from jobs.submit import submit_sweep
            from worldmodels.errors import ConfigError

            if args.profile is None:
                raise ConfigError("sweep --executor slurm needs --profile (a YAML file in slurm/profiles/)")
            from jobs.profile import load_profile

            submit_sweep(sweep, load_profile(args.profile), container=args.container)
        else:
            sweep.run_locally()
        return 0
    if args.command == "play":
        return play(args)
    if args.command == "rounds":
        print(" ".join(map(str, range(resolve_config(args, None).rounds.count))))
        return 0
    cfg = resolve_config(args, args.run_dir)
    root, root_base = args.run_dir, getattr(args, "base", None)  # round 0's, before --round moves them
    if getattr(args, "round", 0):  # round R is a run directory of its own under round 0's (worldmodels.rounds)
        from worldmodels.rounds import round_base, round_config, round_path

        cfg = round_config(cfg, args.round)
        args.run_dir = round_path(args.run_dir, args.round)
        args.base = round_base(args.base, args.round)
    if args.command == "submit":
        from jobs.profile import load_profile
        from jobs.submit import stages_for, submit, submit_rounds

        if args.stage == "pipeline":  # every round from this one on
            submit_rounds(cfg, root, load_profile(args.profile), dry_run=args.dry_run, container=args.container,
                          base=root_base)
            return 0
        submit(cfg, args.run_dir, stages_for(args.stage), load_profile(args.profile), dry_run=args.dry_run,
               container=args.container, base=args.base)
        if cfg.rounds.index + 1 < cfg.rounds.count:
            print(f"round {cfg.rounds.index} of rounds 0..{cfg.rounds.count - 1}: submit round {cfg.rounds.index + 1} "
                  f"(--round {cfg.rounds.index + 1}) once this one has finished")
        return 0
    if args.command in STAGES:
        line = run_stage(args.command, cfg, args.run_dir, task=getattr(args, "task", 0),
                         num_tasks=getattr(args, "num_tasks", 1), base=args.base, restart=getattr(args, "restart", False))
        if line:
            print(line)
        return 0
    if args.command == "push":
        from worldmodels.hub import push

        print(f"push: {push(cfg, args.run_dir, repo_id=args.repo_id, dry_run=args.dry_run)}")
        return 0
    raise AssertionError(args.command)


def play(args: argparse.Namespace) -> int:
    import numpy as np

    from worldmodels.agent import Agent, play as play_agent
    from worldmodels.errors import ConfigError

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    agent = Agent.load(args.model)
    scores = play_agent(agent, args.episodes, args.video, protocol="sticky" if args.sticky else None,
                        on_score=lambda k, seed, score: print(f"episode {k} (seed {seed}): {score:g}", flush=True))
    print(f"play: {np.mean(scores):.1f} +- {np.std(scores):.1f} over {len(scores)} episodes"
          + (f"; episode 0 recorded to {args.video}" if args.video else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    from worldmodels.tracking import setup_logging

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an earlier positional (submit's STAGE) all the positionals it can take at
    # once, so key=value overrides after options arrive here: accept them, refuse anything else
    unknown = [item for item in extra if "=" not in item or item.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    setup_logging()
    try:
        return run(args)
    except WorldModelsError as exc:
        print(one_line(exc), file=sys.stderr)
        # a chunk that fails its checksum ends zarr's read of a selection at once, and the read's
        # other chunks may still be pending on zarr's event loop when its exit hook stops the loop:
        # asyncio's "Task was destroyed but it is pending!" would follow the one-line error
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return ERROR_EXIT_CODE
    except PermissionError as exc:  # e.g. a colleague's run in a directory this user may not read
        print(f"error: {exc.filename or exc}: permission denied; the run's owner can open it up (its files "
              "follow the owner's umask: 002 shares them with the group)", file=sys.stderr)
        return ERROR_EXIT_CODE
    except OSError as exc:  # a path given for output that cannot be written (a file where a folder goes, /proc)
        if exc.filename is None:  # not about a path: a bug's traceback stays
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return ERROR_EXIT_CODE
    except Interrupted as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    except KeyboardInterrupt:  # a Ctrl-C outside a stage's loop, or a second one: what was saved stays
        again = ("some jobs may be submitted already: see `status` (or squeue) before submitting again"
                 if args.command == "submit" or getattr(args, "executor", None) == "slurm"  # a sweep's too
                 else "rerun the same command to go on")  # a rerun would submit them twice
        print(f"{args.command}: interrupted (Ctrl-C); {again}", file=sys.stderr)
        return 130
