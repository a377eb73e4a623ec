"""`python -m worldmodels STAGE --config configs/NAME.yaml --run-dir DIR [key.sub=value ...]`.

Every stage runs in-process and resumes when rerun with the same arguments. Errors a user can
fix are printed as one line and exit 2; an interrupted stage exits 75 (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldmodels.errors import Interrupted, WorldModelsError
from worldmodels.preemption import REQUEUE_EXIT_CODE
from worldmodels.stages import STAGES, TASK_STAGES, run_stage

STAGE_HELP = {
    "collect": "play episodes with collect.policy into RUN_DIR/data/rollouts.zarr",
    "train-vae": "train V, the VAE, on the rollouts into RUN_DIR/checkpoints/vae",
    "encode": "encode every episode to mu/logvar in RUN_DIR/data/latents.zarr",
    "train-mdnrnn": "train M, the MDN-RNN, on the latents into RUN_DIR/checkpoints/mdnrnn",
    "train-controller": "find C with CMA-ES (MPI ranks when under mpirun/srun) into RUN_DIR/checkpoints/controller",
    "evaluate": "score C, the random policy and fixed heuristics into RUN_DIR/eval/results.json",
    "report": "write RUN_DIR/report/index.html from everything the run has made",
}


def _stage_parser(sub: argparse._SubParsersAction, name: str, help: str, first: tuple[str, str] | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    if first:
        p.add_argument(first[0], metavar=first[0].upper(), help=first[1])
    p.add_argument("--config", type=Path, help="preset YAML (default: the run directory's saved config.yaml)")
    p.add_argument("--run-dir", type=Path, required=True, help="the run directory (created, or resumed)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. collect.episodes=8")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldmodels", description="World Models for Atari Space Invaders: "
                                     "every stage is a resumable batch job over a run directory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name in STAGES:
        p = _stage_parser(sub, name, STAGE_HELP[name])
        if name in TASK_STAGES:
            p.add_argument("--task", type=int, default=0, help="which task to run (episodes k with k %% num-tasks == task)")
            p.add_argument("--num-tasks", type=int, default=1, help="how many tasks share the episodes (default 1: all)")
    p = _stage_parser(sub, "push", "upload models, results, report and a model card to the Hugging Face Hub")
    p.add_argument("--repo-id", help="the Hub repository, e.g. user/worldmodels-spaceinvaders")
    p.add_argument("--dry-run", type=Path, metavar="DIR", help="write the folder that would be uploaded to DIR instead")
    p = _stage_parser(sub, "submit", "submit a stage (or `pipeline`: every stage, chained) to Slurm through submitit",
                      first=("stage", f"{', '.join(STAGES)} or pipeline"))
    p.add_argument("--profile", type=Path, required=True, help="where to run: a YAML file in slurm/profiles/")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch scripts instead of submitting")
    p.add_argument("--container", metavar="IMAGE", help="run the jobs inside this image (an Apptainer .sif, or a "
                   "Docker/Podman image name) through containers/run.sh")
    p = sub.add_parser("status", help="show where each stage of a run directory stands",
                       description="show where each stage of a run directory stands")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def resolve_config(args: argparse.Namespace):
    """The config for a stage command: the preset plus overrides, or the run directory's saved one."""
    from worldmodels import config as config_lib
    from worldmodels import rundir
    from worldmodels.errors import ConfigError

    if args.config is None:
        saved = rundir.saved_config(args.run_dir)
        if saved is None:
            raise ConfigError(f"--config is required: {args.run_dir} has no saved config.yaml yet")
        if args.overrides:
            raise ConfigError("overrides need --config (a run directory's saved config cannot be changed)")
        return saved
    return config_lib.load(args.config, args.overrides)


def run(args: argparse.Namespace) -> int:
    if args.command == "status":
        from worldmodels.status import format_status, run_status, to_json

        status = run_status(args.run_dir)
        if (Path(args.run_dir) / "slurm" / "jobs.json").is_file():
            from jobs.status import slurm_view

            for stage, view in slurm_view(args.run_dir).items():
                status["stages"][stage].update(view)
        print(to_json(status) if args.json else format_status(status))
        return 0
    cfg = resolve_config(args)
    if args.command == "submit":
        from jobs.profile import load_profile
        from jobs.submit import stages_for, submit

        submit(cfg, args.run_dir, stages_for(args.stage), load_profile(args.profile), dry_run=args.dry_run,
               container=args.container)
        return 0
    if args.command in STAGES:
        line = run_stage(args.command, cfg, args.run_dir, task=getattr(args, "task", 0), num_tasks=getattr(args, "num_tasks", 1))
        if line:
            print(line)
        return 0
    if args.command == "push":
        from worldmodels.report import push

        print(f"push: {push(cfg, args.run_dir, repo_id=args.repo_id, dry_run=args.dry_run)}")
        return 0
    raise AssertionError(args.command)


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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return REQUEUE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
