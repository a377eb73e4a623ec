"""The one training loop every model stage uses: resume, step, log, checkpoint, stop on a signal.

A stage supplies its model, optimizer, a batch source that can start at any step, and a loss
function; `fit` does the rest. Everything a step depends on (parameters, optimizer moments,
every RNG state, the loader position, which is the step itself) is in the checkpoint, so on
CPU a run interrupted at any step and rerun ends with bitwise the same parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import torch

from worldmodels.checkpoint import Checkpointer, load_model_state, rng_state, set_rng_state
from worldmodels.config import Config
from worldmodels.errors import DataError, TrainingError
from worldmodels.preemption import StopFlag
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.tracking import Tracker

log = logging.getLogger("worldmodels")


def checkpointer(cfg: Config, run: RunDir, stage: str, device: torch.device) -> Checkpointer:
    from worldmodels.device import kernels_on

    return Checkpointer(run.checkpoints(stage),
                        every_steps=cfg.train.checkpoint_every_steps, every_s=cfg.train.checkpoint_every_s,
                        keep=cfg.train.keep_checkpoints, root=run.path, kernels=kernels_on(device))


class MetricsLog:
    """RUN_DIR/logs/STAGE.jsonl, one line per logged step; truncated to the resumed step on restart
    so that an interrupted run's log ends identical to an uninterrupted one's."""

    def __init__(self, run: RunDir, stage: str, resume_step: int):
        self.path = run.metrics_log(stage)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in self.read(self.path) if line["step"] <= resume_step]
        atomic_write(self.path, "".join(json.dumps(line) + "\n" for line in kept).encode())

    def append(self, record: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: Path) -> list[dict[str, float]]:
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line torn by a full disk or a kill; the resumed run writes it again
                continue
        return records


@dataclass
class Fit:
    """What `fit` trains: a stage's model, optimizer and data, and how to score a batch."""

    stage: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Generator[Any, None, None]]  # batches(step) yields batch step, step + 1, ...
    loss: Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # batch -> (loss, metrics)
    total_steps: int
    grad_clip: float | None = None
    extra_state: dict[str, Any] | None = None  # saved with every checkpoint (e.g. model sizes)
    finish: Callable[[], dict[str, Any]] | None = None  # what the trained model adds to the last checkpoint (V: its int8 ranges)
    pictures: Callable[[], list[Path]] | None = None  # draws the report's pictures of the trained model
    init: Path | None = None  # a checkpoint a fresh start continues from (the previous round's): its model and optimizer


def fit(cfg: Config, run: RunDir, job: Fit) -> int:
    """Train `job.model` to `job.total_steps`, resuming from the newest good checkpoint; returns the step."""
    from worldmodels.identity import digest, identity

    ckpt = checkpointer(cfg, run, job.stage, next(job.model.parameters()).device)
    own = digest(identity(cfg, job.stage))
    step = 0
    state = ckpt.resume(job.stage)
    if state is not None:
        if state.get("identity") != own:
            raise DataError(f"{ckpt.directory}: checkpoints were written for another identity of {job.stage}")
        load_model_state(job.model, state["model"], str(ckpt.directory))
        job.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        log.info("%s: resuming from step %d", job.stage, step)
    elif job.init is not None:
        from worldmodels.checkpoint import load_file

        start = load_file(job.init)
        load_model_state(job.model, start["model"], str(job.init))
        job.optimizer.load_state_dict(start["optimizer"])
        log.info("%s: continuing from %s", job.stage, job.init)
    metrics_log = MetricsLog(run, job.stage, step)

    def save() -> None:
        last = job.finish() if job.finish is not None and step == job.total_steps else {}
        ckpt.save(step, {"step": step, "model": job.model.state_dict(), "optimizer": job.optimizer.state_dict(),
                         "rng": rng_state(), "identity": own, **(job.extra_state or {}), **last})

    # closing the batches stops the loader's read-ahead threads however training ends
    with Tracker(cfg, run, job.stage, total=job.total_steps, done=step, unit="steps") as tracker, StopFlag() as stop, \
            contextlib.closing(job.batches(step)) as batches:
        job.model.train()
        if job.total_steps == 0 and state is None:  # an untrained model (an ablation): its initialisation is the result
            save()
        while step < job.total_steps:
            loss, metrics = job.loss(next(batches))
            if not torch.isfinite(loss):
                last = ckpt.steps()[-1] if ckpt.steps() else None
                raise TrainingError(f"{job.stage}: loss is {loss.item()} at step {step + 1}; stopped "
                                    f"(last good checkpoint: {'step ' + str(last) if last is not None else 'none'})")
            job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.grad_clip is not None:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(job.model.parameters(), job.grad_clip)
            job.optimizer.step()
            step += 1
            if step % cfg.train.log_every_steps == 0 or step == job.total_steps:
                record = {"step": step, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()}}
                metrics_log.append(record)
                tracker.log({f"{job.stage}/{k}": v for k, v in record.items() if k != "step"}, step=step)
            tracker.advance(1)
            if ckpt.due(step) or step == job.total_steps or stop.requested:
                save()
            stop.check()
        if job.pictures is not None:
            tracker.images({f"{job.stage}/{path.stem}": path for path in job.pictures()})
    return step
