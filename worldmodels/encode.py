"""The encode stage: every episode's frames to V's mu and logvar in data/latents.zarr.

The latents store mirrors the rollouts (same episodes, same slots, same per-step actions,
rewards and flags), so M trains from it alone. Like collect, work is split into tasks that own
disjoint episodes, each episode is committed whole, and a rerun encodes only what is missing.
The store records which V made it, by the digest of its parameters: latents of two different Vs
never mix, and a V retrained bit for bit is the same V. In a later round of iterative training the
latents hold every round's episodes, round after round, encoded by that round's V.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodels.checkpoint import model_digest
from worldmodels.config import Config
from worldmodels.dataset import EpisodeStore, Field
from worldmodels.distributed import task_episodes
from worldmodels.errors import DataError
from worldmodels.preemption import StopFlag
from worldmodels.rundir import RunDir
from worldmodels.tracking import Tracker
from worldmodels.vae import to_input

STAGE = "encode"
COPIED = ("actions", "rewards", "terminated", "truncated")


def open_latents(cfg: Config, run: RunDir, rollouts: list[EpisodeStore], vae_digest: str) -> EpisodeStore:
    """The run's latents store: one slot per episode of `rollouts` (every round's, in order)."""
    first = rollouts[0]
    z = Field("float32", (cfg.vae.z_size,))
    fields = {"mu": z, "logvar": z, **{name: first.fields[name] for name in COPIED}}
    store = EpisodeStore.create(run.latents, fields=fields, episodes=sum(r.num_episodes for r in rollouts), slot=first.slot,
                                chunk_steps=int(first.attrs["chunk_steps"]), attrs={**first.attrs, "vae": vae_digest})
    if store.attrs.get("vae") != vae_digest:
        raise DataError(f"{store.path} was encoded with another V (parameters {store.attrs.get('vae')}, this V's are "
                        f"{vae_digest}); remove it to re-encode")
    return store


def encode(cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> str:
    """Encode every episode of this task that is not encoded yet; returns a line for people.

    In round k of iterative training (worldmodels.rounds) the episodes are those of rounds 0..k, in order."""
    from worldmodels.device import in_fixed_chunks, kernels_on, select_device
    from worldmodels.rounds import rollouts as every_round

    run = RunDir(run_dir)
    rollouts = every_round(run, cfg)
    # latents episode -> (its rollouts store, that store's index, its episode there)
    where = [(r, index, k) for r, index in zip(rollouts, (r.index() for r in rollouts)) for k in range(r.num_episodes)]
    owned = task_episodes(len(where), task, num_tasks)
    device = select_device(cfg.train.device)
    vae = run.load_vae(cfg, device)
    store = open_latents(cfg, run, rollouts, model_digest(vae))
    lengths = store.lengths()
    todo = [k for k in owned if lengths[k] == 0]
    with Tracker(cfg, run, STAGE, total=len(owned), done=len(owned) - len(todo), unit="episodes",
                 task=task if num_tasks > 1 else None, kernels=kernels_on(device)) as tracker, StopFlag() as stop, \
            torch.no_grad():
        for k in todo:
            stop.check()
            source, index, j = where[k]
            episode = source.read_episode(j)
            frames = torch.from_numpy(episode["frames"])
            mus, logvars = [], []
            for i in range(0, len(frames), cfg.encode.batch_size):
                mu, logvar = in_fixed_chunks(lambda f: vae.encode(to_input(f)), frames[i:i + cfg.encode.batch_size].to(device))
                mus.append(mu.float().cpu().numpy())
                logvars.append(logvar.float().cpu().numpy())
            store.write_episode(k, {"mu": np.concatenate(mus), "logvar": np.concatenate(logvars),
                                    **{name: episode[name] for name in COPIED}},
                                ret=float(index["return"][j]), seed=int(index["seed"][j]))
            tracker.advance(1)
    return f"encode: {len(owned)} episodes in {store.path} ({len(todo)} encoded now)"
