"""A stage's identity: the config its results depend on. Resuming, refusing and branching rest on it.

A stage's identity is its own config keys (the record's `config` in worldmodels.stages, a key
belonging to the stage that names it most specifically) plus its upstream stages' identities, with
stage seeds resolved (`controller.seed` unset means the run seed). Operational settings, which
change how a stage runs but not what it produces on CPU, belong to no identity (OPERATIONAL): a run
may resume with other values of them and ends with the same artifacts (the tests check each).

The first start of a stage records its identity in RUN_DIR/stages/STAGE.json. Later starts must
resolve to the same identity for every stage that has made something or is running (holds its
lease, worldmodels.lease); a stage that made nothing yet simply takes the new values. With `--from BASE`, a stage whose identity equals BASE's finished
one is recorded as reused from the run that made it (read-only, by reference, never copied) and is
not run again; the first stage whose identity differs, and every stage after it, is the branch's own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from worldmodels import config as config_lib, lease
from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.stages import STAGES, chain

log = logging.getLogger("worldmodels")

# The version of the stage records and of the random streams behind every artifact (worldmodels.seeds):
# a run of another version can neither be resumed nor branched from.
RUN_FORMAT = 2

OPERATIONAL = frozenset({
    "train.device", "vae.compile",  # where the arithmetic runs (identical on CPU; see the README for GPUs)
    "collect.envs_per_task", "encode.batch_size", "controller.batch", "evaluate.batch",  # lockstep batches
    "vae.loader_workers", "mdnrnn.loader_workers",  # read-ahead threads
    "controller.master_evaluates", "controller.heartbeat_s",  # which ranks play, how long one may be silent
    "train.checkpoint_every_steps", "train.checkpoint_every_s", "train.keep_checkpoints",  # checkpoint cadence
    "train.log_every_steps", "logging.every_s", "logging.wandb", "logging.project",  # logging and tracking
})


# Keys added to the config after RUN_FORMAT 2, with the value that behaves as before they existed.
# At that value a key is left out of every identity, so runs made before it still resume and branch.
ADDED_SINCE_FORMAT = {"env.repeat_action_probability": 0.0, "controller.inputs": "zh", "evaluate.protocols": ["v4"],
                      "controller.select": 0, "controller.select_rollouts": 16, "controller.select_protocol": None,
                      "controller.protocol": None,
                      "vae.channels": 32, "vae.precision": "float32"}


@functools.cache
def own_keys(stage: str) -> tuple[str, ...]:
    """The config keys that belong to `stage` (not to its upstream, and not operational)."""
    keys = config_lib.flat(config_lib.to_dict(Config()))
    out = []
    for key in keys:
        claims = [(len(prefix), name) for name, record in STAGES.items() for prefix in record.config
                  if key == prefix or key.startswith(prefix + ".")]
        if claims and max(claims)[1] == stage and key not in OPERATIONAL:
            out.append(key)
    return tuple(out)


# Keys outside train-controller's chain that a later round's stages depend on all the same: which
# controller of round k-1 plays round k's collect (worldmodels.rounds.collecting_policy). Before this
# key joined their identity, runs left it out; at the value given here they still do, so they resume.
PLAYS_NEXT_ROUND = {"evaluate.controller": "best"}


def identity(cfg: Config, stage: str) -> dict[str, Any]:
    """{"section.key": value} of every key `stage`'s results depend on, its upstream's included."""
    values = config_lib.flat(config_lib.to_dict(cfg))
    names = chain(stage)
    if cfg.rounds.index:  # a later round collects with the previous round's controller: all of its config counts
        names = [name for name in STAGES if name in chain("train-controller") or name in names]
    out = {}
    for name in names:
        for key in own_keys(name):
            section, _, leaf = key.rpartition(".")
            if key in ADDED_SINCE_FORMAT and values[key] == ADDED_SINCE_FORMAT[key]:
                continue
            if key.startswith("rounds.") and not cfg.rounds.index:  # round 0 is the plain pipeline, whatever follows it
                continue
            out[key] = cfg.seed_of(section) if leaf == "seed" and section else values[key]
    if cfg.rounds.index:
        out |= {key: values[key] for key, before in PLAYS_NEXT_ROUND.items() if key in out or values[key] != before}
    return out


def digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def decide(cfg: Config, run_dir: str | Path, stage: str, base: str | Path | None = None,
           held: Path | None = None) -> dict[str, dict[str, Any]]:
    """The stage records `begin` writes for `stage` under `cfg` (its own and those of the stages it
    reads from that change), or the clear error it raises; writes nothing. `held`: the lease this
    process holds for the stage (worldmodels.lease), which is not another copy running it."""
    from worldmodels.sweep import Sweep

    run = RunDir(run_dir)
    if Sweep.is_sweep(run.path):
        raise ConfigError(f"--run-dir {run.path} is a sweep folder: name one of its points, or a new run directory")
    base_run = open_base(Path(base)) if base is not None else None
    decided: dict[str, dict[str, Any]] = {}
    reads = chain(stage)
    for name in reads:
        record = _decide(cfg, run, name, base_run, decided, held)
        if record is not None:
            decided[name] = record
    # the stages after it keep their records until they start, but config.yaml, which commands without
    # --config read, is saved now: it may not take other values for a stage that has made something
    for name in STAGES:
        if name not in reads:
            _decide(cfg, run, name, None, decided, None)
    return decided


def begin(cfg: Config, run_dir: str | Path, stage: str, base: str | Path | None = None,
          held: Path | None = None) -> RunDir:
    """Open `run_dir` for `stage` under `cfg`: check (or record) the identity of the stage and of
    every stage it reads from, reusing BASE's finished stages where they match; save the config."""
    decided = decide(cfg, run_dir, stage, base, held)  # written only once every stage of the chain is accepted
    run = writable(Path(run_dir))
    for name, record in decided.items():
        atomic_write(run.stage_record_file(name), json.dumps(record, indent=1).encode())
    text = config_lib.dump(cfg)
    if not run.config_file.is_file() or run.config_file.read_text() != text:
        atomic_write(run.config_file, text.encode())
    return run


def _decide(cfg: Config, run: RunDir, name: str, base: RunDir | None, decided: dict[str, dict[str, Any]],
            held: Path | None) -> dict[str, Any] | None:
    """The record `name` gets (None: the one it has stands), or a clear error."""
    given = identity(cfg, name)
    record = run.stage_record(name)
    if record is not None and record.get("format") != RUN_FORMAT:
        raise DataError(f"{run.path} was made by another version of worldmodels (run format {record.get('format')}, "
                        f"this version writes {RUN_FORMAT}); start a new run directory")
    if record is not None:
        if record["identity"] == given:
            return None
        changed = "; ".join(differences(record["identity"], given))
        if record.get("reused_from"):
            raise ConfigError(f"{name} is reused from {record['reused_from']}, which ran it with other values ({changed}); "
                              f"to run {name} with the new values, branch: {_branching(run, cfg)}")
        running = lease.running_otherwise(run.path, name, digest(given), besides=held)
        if running:  # it has made nothing yet, but its record is the identity it runs with
            raise ConfigError(f"{name} is running in {run.path} ({running}) with other values ({changed}); wait "
                              f"for it to end, or branch into a new run directory: {_branching(run, cfg)}")
        if started(run, name, cfg):
            if (run.stage_record(name) or {}).get("identity") == given:
                return None  # a task started together with these values recorded them, and began, since `record` was read
            raise ConfigError(f"{name} in {run.path} was run with other values ({changed}); to run it with the new "
                              f"values, branch into a new run directory: {_branching(run, cfg)}")
    reused_from = None
    upstream_reused = all((decided[up] if up in decided else run.stage_record(up) or {}).get("reused_from")
                          for up in STAGES[name].upstream)
    if base is not None and upstream_reused:
        theirs = base.stage_record(name)
        if theirs is not None and theirs.get("format") != RUN_FORMAT:
            raise DataError(f"--from {base.path}: made by another version of worldmodels (run format "
                            f"{theirs.get('format')}, this version reads {RUN_FORMAT}); its datasets cannot be reused")
        # a stage BASE has not started yet would have BASE's config as its identity
        their_identity = theirs["identity"] if theirs is not None else identity(base.saved_config(), name)
        if their_identity == given:
            owner = base.owner(name)
            if not finished(owner, name, cfg):
                raise DataError(f"--from {base.path}: its {name} has this identity but is not finished; finish it "
                                f"there first, or branch from a run where it is")
            reused_from = str(owner.path.resolve())
        else:  # the branch's own from this stage on: say why (a forgotten override is the usual reason)
            log.info("--from %s: %s runs here, its config differs from there (%s)", base.path, name,
                     "; ".join(differences(their_identity, given)))
    return {"stage": name, "format": RUN_FORMAT, "identity": given, "digest": digest(given),
            "reused_from": reused_from, "decided": time.time()}


def _branching(run: RunDir, cfg: Config) -> str:
    """How to branch from `run`, for people: a later round branches from round 0, round by round."""
    from worldmodels.rounds import first_round

    k = cfg.rounds.index
    if not k:
        return f"--run-dir NEW --from {run.path}"
    return f"--run-dir NEW --from {first_round(run, cfg)}, with --round R for every round R from 0 to {k}"


def started(run: RunDir, name: str, cfg: Config) -> bool:
    """Whether the stage has made anything in this run (a state record or an artifact)."""
    return bool(run.read_states(name)) or STAGES[name].progress(run, cfg)[0] > 0


def finished(run: RunDir, name: str, cfg: Config) -> bool:
    return STAGES[name].progress(run, cfg)[0] >= STAGES[name].units(cfg)


def unfinished_input(run: RunDir, name: str, cfg: Config, decided: dict[str, dict[str, Any]] | None = None
                     ) -> tuple[str, RunDir] | None:
    """The first stage `name` reads from (Stage.inputs) that has not finished, and the run directory
    that holds it (this one, or the one the run reuses it from; `decided`: records not written yet)."""
    for needed in STAGES[name].inputs(cfg):
        owner = run.owner(needed, (decided or {}).get(needed))
        if not finished(owner, needed, cfg):
            return needed, owner
    return None


def writable(run_dir: Path) -> RunDir:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root everywhere; only a real write proves the directory usable.
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
    return RunDir(run_dir)


def open_base(path: Path) -> RunDir:
    """The run `--from path` names, or a clear error when it is not one this version can reuse."""
    base = RunDir(path)
    if not base.config_file.is_file():
        raise DataError(f"--from {path}: not a run directory (no {base.config_file.name})")
    if not (base.path / "stages").is_dir():
        raise DataError(f"--from {path}: made by another version of worldmodels (no stage records); "
                        "its datasets cannot be reused")
    return base
