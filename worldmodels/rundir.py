"""The run directory: where every artifact of every stage lives, and the loaders that read them back.

    RUN_DIR/config.yaml                    the resolved config of the latest accepted start
    RUN_DIR/stages/STAGE.json              each stage's identity, and where a reused stage lives
    RUN_DIR/state/STAGE[.taskI].json       each stage's (or task's) last recorded state
    RUN_DIR/data/rollouts.zarr             collect
    RUN_DIR/data/latents.zarr              encode
    RUN_DIR/checkpoints/{vae,mdnrnn,controller}/   train-vae, train-mdnrnn, train-controller
    RUN_DIR/logs/STAGE.jsonl               the training stages' logged metrics
    RUN_DIR/eval/{parts/,results.json,videos/}     evaluate
    RUN_DIR/report/                        every stage's pictures; index.html (report)
    RUN_DIR/slurm/{jobs.json,JOBID/}       submitted jobs and their logs
    RUN_DIR/wandb/                         offline wandb runs
    RUN_DIR/rounds/K/                      round K >= 1 of iterative training: a run directory of its own

A run branched from another (`--from BASE`) reuses BASE's finished stages where they are: every
path of a stage's artifacts goes through `owner(stage)`, the run directory that made them, so a
stage reads its upstream's output the same way whether it was made here or reused, and writes
only into its own run directory. No stage imports another to find or load what it made.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from worldmodels import config as config_lib
from worldmodels.config import Config
from worldmodels.errors import DataError
from worldmodels.files import atomic_write, overwrite_in_place, read_json

log = logging.getLogger("worldmodels")

if TYPE_CHECKING:
    import numpy as np
    import torch

    from worldmodels.dataset import EpisodeStore

CONFIG_FILE = "config.yaml"
CHECKPOINTS = {"train-vae": "vae", "train-mdnrnn": "mdnrnn", "train-controller": "controller"}
STALE_AFTER_S = 120.0  # a "running" state not refreshed for this long is reported as interrupted


def run_holding(path: str | Path) -> Path | None:
    """The run directory that `path` is or lies in (None when none): where a command writing files
    for people (compare, push --dry-run) must not, or a run's own files would be replaced."""
    for folder in [Path(path).resolve(), *Path(path).resolve().parents]:
        if (folder / CONFIG_FILE).is_file() and (folder / "stages").is_dir():
            return folder
    return None


class RunDir:
    """One run directory: the path of every artifact (through the stage that owns it) and its loaders."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- the run's own records -----------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    def saved_config(self) -> Config | None:
        """The config of the run's latest accepted start, or None for a new directory."""
        if not self.config_file.is_file():
            return None
        return config_lib.from_dict(yaml.safe_load(self.config_file.read_text()) or {})

    def stage_record_file(self, stage: str) -> Path:
        return self.path / "stages" / f"{stage}.json"

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        """The stage's identity record (see worldmodels.identity), or None before it was decided."""
        return read_json(self.stage_record_file(stage))

    def owner(self, stage: str, record: dict[str, Any] | None = None) -> "RunDir":
        """The run directory that holds `stage`'s artifacts: this one, or the one it reuses them from
        (as `record` says, when given: a stage record not written yet)."""
        record = record or self.stage_record(stage) or {}
        return RunDir(record["reused_from"]) if record.get("reused_from") else self

    def state_file(self, stage: str, task: int | None = None) -> Path:
        return self.path / "state" / (f"{stage}.json" if task is None else f"{stage}.task{task}.json")

    @property
    def jobs_file(self) -> Path:
        """Ids of the Slurm jobs submitted for this run, per stage (written by jobs/submit.py)."""
        return self.path / "slurm" / "jobs.json"

    @property
    def slurm_dir(self) -> Path:
        return self.path / "slurm"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    # --- every stage's artifacts, wherever the stage ran -----------------------------------------

    @property
    def rollouts(self) -> Path:
        return self.owner("collect").path / "data" / "rollouts.zarr"

    @property
    def latents(self) -> Path:
        return self.owner("encode").path / "data" / "latents.zarr"

    def checkpoints(self, stage: str) -> Path:
        """RUN_DIR/checkpoints/{vae,mdnrnn,controller} of a training stage."""
        return self.owner(stage).path / "checkpoints" / CHECKPOINTS[stage]

    def metrics_log(self, stage: str) -> Path:
        return self.owner(stage).path / "logs" / f"{stage}.jsonl"

    def figure(self, stage: str, name: str) -> Path:
        """A picture `stage` left in its report folder."""
        return self.owner(stage).path / "report" / name

    @property
    def eval_dir(self) -> Path:
        return self.owner("evaluate").path / "eval"

    @property
    def eval_parts(self) -> Path:
        return self.eval_dir / "parts"

    @property
    def results_file(self) -> Path:
        return self.eval_dir / "results.json"

    @property
    def videos(self) -> Path:
        return self.eval_dir / "videos"

    # --- loaders -------------------------------------------------------------------------------

    def finished_rollouts(self) -> "EpisodeStore":
        """The rollouts, refusing a collection that is still incomplete."""
        return _finished(self.rollouts, "collect")

    def finished_latents(self, cfg: Config) -> "EpisodeStore":
        """The latents, refusing an incomplete encoding or one of another z size."""
        store = _finished(self.latents, "encode")
        z_size = store.fields["mu"].shape[0]
        if z_size != cfg.vae.z_size:
            raise DataError(f"{store.path} holds latents of size {z_size}, the config says vae.z_size={cfg.vae.z_size}")
        return store

    def finished_checkpoint(self, stage: str, total: int) -> Path:
        """The final checkpoint of a training stage that reached `total` steps; a clear error otherwise."""
        from worldmodels.checkpoint import latest_step

        directory = self.checkpoints(stage)
        step = latest_step(directory)
        if step is None or step < total:
            where = f"no checkpoint in {directory}" if step is None else f"checkpoint step {step} of {total} in {directory}"
            raise DataError(f"{stage} is not finished ({where}); run it first")
        return directory / f"step-{step:09d}.pt"

    def vae_checkpoint(self, cfg: Config) -> Path:
        """The VAE checkpoint to encode and play with: `encode.vae`, or the finished train-vae's."""
        if cfg.encode.vae:
            path = Path(cfg.encode.vae)
            if not path.is_file():
                raise DataError(f"config key 'encode.vae': no checkpoint file {path}")
            return path
        return self.finished_checkpoint("train-vae", cfg.vae.steps)

    def load_vae(self, cfg: Config, device: "torch.device | str" = "cpu"):
        """V from its checkpoint, channels-last on `device`, in eval mode."""
        return vae_from(self.vae_checkpoint(cfg), cfg, device)

    def load_mdnrnn(self, cfg: Config, device: "torch.device | str" = "cpu"):
        """The finished M on `device`, in eval mode."""
        return mdnrnn_from(self.finished_checkpoint("train-mdnrnn", cfg.mdnrnn.steps), cfg, device)

    def load_world_model(self, cfg: Config):
        """The finished V and M on `train.device`."""
        from worldmodels.device import select_device

        device = select_device(cfg.train.device)
        return self.load_vae(cfg, device), self.load_mdnrnn(cfg, device)

    def start_latents(self, limit: int = 1000) -> "np.ndarray":
        """(mu, logvar) [N, 2, z] of the first frames of up to `limit` episodes: where dreams begin."""
        import numpy as np

        from worldmodels.dataset import EpisodeStore

        store = EpisodeStore.open(self.latents)
        rows = [store.read_episode(int(k), ["mu", "logvar"]) for k in store.complete()[:limit]]
        if not rows:
            raise DataError(f"{store.path} has no encoded episode to start dreams from (run encode first)")
        return np.stack([np.stack([r["mu"][0], r["logvar"][0]]) for r in rows])

    def load_controller(self, cfg: Config, size: int) -> tuple["np.ndarray", Path]:
        """The controller vector evaluate plays (`evaluate.controller`: best or mean) and its checkpoint."""
        path = self.finished_checkpoint("train-controller", cfg.controller.generations)
        return controller_from(path, cfg, size), path

    def fitness_history(self) -> list[dict[str, float]]:
        """CMA-ES's record of every generation so far (empty before the first)."""
        from worldmodels.checkpoint import Checkpointer

        saved = Checkpointer(self.checkpoints("train-controller"), every_steps=1, every_s=1, keep=1).load_latest()
        return list(saved["history"]) if saved else []

    def results(self) -> dict[str, Any] | None:
        """eval/results.json, once evaluate has written it."""
        return read_json(self.results_file)

    # --- stage states --------------------------------------------------------------------------

    def write_state(self, stage: str, state: str, task: int | None = None, **extra: Any) -> None:
        """Record a stage's (or one task's) state: running, done, interrupted or failed."""
        record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time(), **extra}
        path = self.state_file(stage, task)
        try:
            atomic_write(path, json.dumps(record).encode(), root=self.path)
        except OSError as exc:  # a full disk must not keep a failed stage "running"
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
                raise
            overwrite_in_place(path, json.dumps(record).encode())

    def vanished(self) -> bool:
        """Whether the run directory was removed under a running stage (its config.yaml is gone)."""
        return not self.config_file.is_file()

    def read_states(self, stage: str) -> list[dict[str, Any]]:
        """Every state record of a stage (one per task), with stale "running" ones marked interrupted."""
        records = []
        for path in sorted((self.path / "state").glob(f"{stage}*.json")):
            if path.name != f"{stage}.json" and not path.name.startswith(f"{stage}.task"):
                continue
            record = read_json(path)
            if record is None:
                continue
            if record.get("state") == "running" and time.time() - record.get("updated", 0) > STALE_AFTER_S:
                record["state"] = "interrupted"
            records.append(record)
        return records

    # --- names for what is logged from this run ---------------------------------------------------

    def group_name(self) -> str:
        """A stable name for everything logged from this run directory (its wandb group)."""
        import hashlib

        resolved = str(self.path.resolve())
        return f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"

    def run_id(self, name: str) -> str:
        """A stable wandb run id for one stage (or task) of this run directory: every attempt,
        requeued or rerun by hand, resumes the same wandb run, and its step axis continues."""
        import hashlib

        key = f"{self.path.resolve()}\0{name}"
        return hashlib.sha1(key.encode()).hexdigest()[:16]


def _finished(path: Path, stage: str) -> "EpisodeStore":
    from worldmodels.dataset import EpisodeStore

    store = EpisodeStore.open(path)
    done = int((store.lengths() > 0).sum())
    if done < store.num_episodes:
        raise DataError(f"{stage} is not finished ({done}/{store.num_episodes} episodes in {store.path}); finish it first")
    return store


# --- models from their files: a run's checkpoints, or an agent folder's (see worldmodels.agent) -------


def vae_from(path: Path, cfg: Config, device: "torch.device | str" = "cpu"):
    """V from a file holding its `model` weights, `z_size`, `channels` (and `int8_ranges`), channels-last
    on `device`, in eval mode; its encoder in int8 where vae.precision says so and `device` is the CPU
    (worldmodels.int8)."""
    import torch

    from worldmodels.vae import ConvVAE

    state = _checked(path, "VAE", cfg)
    # files made before vae.channels existed hold the paper's V
    if int(state.get("channels", 32)) != cfg.vae.channels:
        raise DataError(f"{path}: VAE checkpoint has channels {state.get('channels', 32)}, the config says vae.channels={cfg.vae.channels}")
    model = ConvVAE(cfg.vae.z_size, cfg.vae.channels)
    _load_weights(model, path, state)
    # Frames arrive channels-last in memory (to_input permutes without copying): with weights
    # in the same layout the convolutions skip a conversion, 20% faster on CPU.
    model = model.to(device, memory_format=torch.channels_last).eval()
    if cfg.vae.precision == "int8" and torch.device(device).type != "cpu":
        # int8 names CPU kernels: on an accelerator (the demo's preset on a GPU node) V stays in float32
        log.warning("vae.precision=int8 applies on the CPU only: V encodes in float32 on %s", device)
    elif cfg.vae.precision == "int8":
        from worldmodels import int8

        if "int8_ranges" not in state:  # V trained before vae.precision existed
            raise DataError(f"{path}: V has no int8 calibration (trained before vae.precision existed); "
                            "train V again in a new run directory to play it in int8")
        model.encoder = int8.quantized(model.encoder, [float(r) for r in state["int8_ranges"]])
    return model


def mdnrnn_from(path: Path, cfg: Config, device: "torch.device | str" = "cpu"):
    """M from a file holding its `model` weights, `z_size` and `actions`, on `device`, in eval mode."""
    from worldmodels.mdnrnn import MDNRNN

    state = _checked(path, "MDN-RNN", cfg)
    model = MDNRNN(cfg.vae.z_size, int(state["actions"]), cfg.mdnrnn.hidden, cfg.mdnrnn.gaussians)
    _load_weights(model, path, state)
    return model.to(device).eval()


def controller_from(path: Path, cfg: Config, size: int) -> "np.ndarray":
    """The controller vector `evaluate.controller` names from a file holding it: the CMA-ES mean, or
    the best one (the selected candidate when train-controller selected one, see controller.select)."""
    from worldmodels.checkpoint import load_file

    state = load_file(path)
    name = "selected" if cfg.evaluate.controller == "best" and "selected" in state else cfg.evaluate.controller
    solution = state[name].double().numpy()
    if solution.shape != (size,):
        raise DataError(f"{path}: controller has {solution.size} parameters, the world model needs {size}")
    return solution


def _checked(path: Path, what: str, cfg: Config) -> dict[str, Any]:
    """A model checkpoint, refused in one line when its latent size is not the config's."""
    from worldmodels.checkpoint import load_file

    state = load_file(path)
    if int(state.get("z_size", -1)) != cfg.vae.z_size:
        raise DataError(f"{path}: {what} checkpoint has z_size {state.get('z_size')}, the config says vae.z_size={cfg.vae.z_size}")
    return state


def _load_weights(model, path: Path, state: dict[str, Any]) -> None:
    from worldmodels.checkpoint import load_model_state

    load_model_state(model, state["model"], str(path))
