"""The train-controller stage: CMA-ES over controllers, scored in the real game or in M's dream.

Rank 0 asks CMA-ES for a population and broadcasts it; the generation's episodes (every
candidate x every rollout, all candidates sharing the generation's rollout seeds, so they are
compared on the same games) are split evenly over the evaluating ranks (rank 0 too unless
`controller.master_evaluates` is false), each plays its share `controller.batch` episodes at a
time in lockstep, and rank 0 gathers the returns, tells CMA-ES and checkpoints. An episode's return
depends only on (candidate, generation, rollout), so any number of ranks gives the same run.

The checkpoint after every generation holds the pickled CMA-ES (with the random stream of its own
that worldmodels.cma_internals gives it), the generation, the fitness history and the best
solution so far: a run interrupted anywhere and rerun ends with the same history and the same
final mean.

CMA-ES's linear algebra (numpy's BLAS) runs on one thread whatever the launcher: a BLAS sums in
another order on another number of threads, and one process on two cores (two threads) and
`mpirun -n 2` (ranks bound to one core each) drifted apart in the last bits within a few
generations. One thread is the count every launcher can give; at N=1,734 it costs nothing measurable.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels import cma_internals, seeds
from worldmodels.checkpoint import Checkpointer
from worldmodels.config import Config, EnvConfig, protocol_env
from worldmodels.controller import WorldModelPolicy, act, controller_size, seen, unflatten
from worldmodels.distributed import share, world
from worldmodels.envs import EnvPool
from worldmodels.errors import DataError, Interrupted
from worldmodels.preemption import StopFlag
from worldmodels.rundir import RunDir
from worldmodels.tracking import Tracker, log

STAGE = "train-controller"
# Rows per dream step on a CPU. Without fixed chunks, the CPU kernels chosen for M's step by batch
# size made a dream's return differ in the last bits with how episodes were split over ranks
# (seen on an AVX-512 CPU). M's step is all a dream does, so its chunks are larger than the real
# game's (8, where the emulator dominates): on 2 cores, 1,024 dreams ran 16k steps/s in chunks
# of 8, 81k in chunks of 64 and 100k as one batch.
DREAM_CHUNK = 64


def training_env(cfg: Config) -> EnvConfig:
    """The games candidates are scored in: the run's env, under `controller.protocol` when set."""
    return protocol_env(cfg, cfg.controller.protocol)


def training_games(cfg: Config) -> str:
    """What the training games are, in words: M's dream or the real game, with its sticky actions."""
    if cfg.controller.mode == "dream":
        return "in M's dream"
    sticky = training_env(cfg).repeat_action_probability
    return f"in the real game, sticky actions {sticky:g}" if sticky else "in the real game"


def real_returns(cfg: Config, vae, mdnrnn, params: np.ndarray, jobs: list[tuple[int, int]], generation: int,
                 stream: str, stop: StopFlag | None, envs: EnvPool | None = None) -> np.ndarray:
    """Returns of (candidate, rollout) episodes in the real game of `envs`' config (the run's own
    when not given), played in lockstep batches (in `envs`: a pool kept from generation to
    generation); rollout r of a generation is the same game for every candidate, seeded from
    `stream` (controller.train or controller.rescore)."""
    from worldmodels.rollout import Episode, play, same_games

    if not jobs:
        return np.zeros(0)
    envs = envs or EnvPool(cfg.env)
    episodes = [Episode(i, seeds.seed(cfg, stream, generation, r), tag=c) for i, (c, r) in enumerate(jobs)]
    alike = same_games(envs.cfg, episodes)  # a candidate's rollouts that are one game are played once
    episodes = [e for e in episodes if e.k in alike]
    batch = min(cfg.controller.batch, len(episodes))
    policy = WorldModelPolicy(vae, mdnrnn, torch.from_numpy(params), batch=batch, inputs=cfg.controller.inputs)
    out = np.zeros(len(jobs))

    def done(played) -> None:
        out[alike[played.job.k]] = played.ret

    with torch.no_grad():
        play(envs.cfg, policy, episodes, done, batch=batch, stop=stop, envs=envs.take(batch))
    return out


def dream_returns(cfg: Config, mdnrnn, starts: np.ndarray, params: np.ndarray, jobs: list[tuple[int, int]],
                  generation: int) -> np.ndarray:
    """Returns of (candidate, rollout) episodes dreamed by M, all as one batch on M's device.

    Every random draw of rollout r (its start frame, the mixture samples, game over) is shared
    by all candidates, as seeds are in the real game. The draws come from a CPU generator, so
    they are the same on every device. On a CPU each step runs in fixed chunks of DREAM_CHUNK
    rows (worldmodels.device.in_fixed_chunks): an episode's return does not depend on which others
    share its batch, so any split over ranks gives the same run.
    """
    from worldmodels.device import in_fixed_chunks
    from worldmodels.mdnrnn import draws, sample_next

    if not jobs:
        return np.zeros(0)
    c = cfg.controller
    device = next(mdnrnn.parameters()).device
    cand = torch.tensor([j[0] for j in jobs], device=device)
    roll = torch.tensor([j[1] for j in jobs], device=device)
    g = torch.Generator().manual_seed(seeds.seed(cfg, "controller.dream", generation))
    z_size, steps, R = cfg.vae.z_size, c.dream_steps, c.rollouts
    start = torch.from_numpy(starts)[torch.randint(len(starts), (R,), generator=g)]  # [R, 2, z]
    z = (start[:, 0] + torch.exp(0.5 * start[:, 1]) * torch.randn(R, z_size, generator=g)).to(device)[roll]
    weights, biases = unflatten(torch.from_numpy(params).float().to(device), z_size, mdnrnn.hidden, mdnrnn.actions, c.inputs)
    weights, biases = weights[cand], biases[cand]
    n = len(jobs)
    h = cell = torch.zeros(n, mdnrnn.hidden, device=device)
    total, alive = torch.zeros(n, device=device), torch.ones(n, dtype=torch.bool, device=device)

    def step(z, h, cell, weights, biases, gumbel, normal):
        """C acts, M folds the action in and predicts; z_{t+1} sampled from the prediction, and the
        chance that the game ends (sigmoid, like every other transcendental, inside the chunks)."""
        a = act(weights, biases, seen(c.inputs, z, h, cell))
        logpi, mu, logsigma, reward, done, (h, cell) = mdnrnn.step(z, a, (h[None], cell[None]))
        return sample_next(logpi, mu, logsigma, cfg.mdnrnn.tau, gumbel, normal), h[0], cell[0], reward, torch.sigmoid(done)

    with torch.no_grad():
        for t in range(steps):
            gumbel, normal = (d.to(device) for d in draws((R, z_size), mdnrnn.gaussians, g))
            ends = torch.rand(R, generator=g).to(device)
            z, h, cell, reward, ending = in_fixed_chunks(step, z, h, cell, weights, biases, gumbel[roll], normal[roll],
                                                         chunk=DREAM_CHUNK)
            total += alive * reward / cfg.mdnrnn.reward_scale
            alive &= ends[roll] >= ending
            if not alive.any():  # (on a GPU, a sync per step: cheap next to the step itself)
                break
    return total.double().cpu().numpy()


def _kernels(group, device: torch.device) -> str | None:
    """The CPU kernels' fingerprints of every rank (worldmodels.device.cpu_kernels), "+"-joined
    on the master (None elsewhere, and on GPUs); ranks that round differently are said at once."""
    from worldmodels.device import kernels_on

    found = group.gather(kernels_on(device))
    if group.rank != 0:
        return None
    kinds = {k: [group.hosts[r] for r, f in enumerate(found) if f == k] for k in sorted(set(found) - {None})}
    if len(kinds) > 1:
        log.warning("train-controller: the ranks' CPU kernels round differently (%s): an episode's return depends "
                    "on which rank plays it, so this run is not bitwise the one a single kind of CPU makes",
                    "; ".join(f"{k} on {', '.join(sorted(set(hosts)))}" for k, hosts in kinds.items()))
    return "+".join(kinds) or None


def es_bytes(es) -> torch.Tensor:
    """The pickled CMA-ES as a uint8 tensor: torch.save writes a tensor's bytes as they are,
    while a 50 MB `bytes` object (full covariance at N=1,734) costs it 0.4 s per generation."""
    return torch.frombuffer(bytearray(cma_internals.dumps(es)), dtype=torch.uint8)


def train_controller(cfg: Config, run_dir: str | Path) -> str:
    """Run CMA-ES to cfg.controller.generations (resuming from the newest checkpoint); returns a
    line for people (empty on the ranks other than the master)."""
    group = world()
    try:
        # numpy's BLAS runs on one thread (worldmodels.pipeline): the same sums under every launcher
        with group.heartbeat(cfg.controller.heartbeat_s, STAGE):
            summary = _train(cfg, RunDir(run_dir), group)
    except (Interrupted, KeyboardInterrupt):
        raise
    except BaseException:
        if group.size > 1:
            log.exception("train-controller: rank %d failed; aborting every rank", group.rank)
            group.abort(1)
        raise
    if group.rank != 0:  # the master speaks for every rank
        return ""
    return f"train-controller: finished at generation {summary['generation']}, best fitness {summary['best_fitness']:.1f}"


def _train(cfg: Config, run: RunDir, group) -> dict[str, Any]:
    c = cfg.controller
    vae, mdnrnn = run.load_world_model(cfg)
    size = controller_size(cfg.vae.z_size, mdnrnn.hidden, mdnrnn.actions, c.inputs)
    starts = run.start_latents() if c.mode == "dream" else None
    workers = list(range(group.size)) if c.master_evaluates or group.size == 1 else list(range(1, group.size))
    ckpt = Checkpointer(run.checkpoints(STAGE), every_steps=1, every_s=1e9, keep=cfg.train.keep_checkpoints,
                        root=run.path, kernels=_kernels(group, next(mdnrnn.parameters()).device))

    state = None
    if group.rank == 0:
        from worldmodels.checkpoint import load_file
        from worldmodels.rounds import continued_checkpoint

        saved = ckpt.resume(STAGE)
        start = continued_checkpoint(run, cfg, STAGE) if saved is None else None  # a later round's first start
        if start is not None:
            saved = load_file(start)
        if saved is not None:
            if int(saved["size"]) != size:
                raise DataError(f"{start or ckpt.directory}: controller checkpoint has {saved['size']} parameters, "
                                f"the world model needs {size}")
            es = cma_internals.loads(saved["es"].numpy().tobytes())
        if start is not None:  # CMA-ES goes on where the previous round stopped; its candidates now play the new world
            state = _fresh(size)
            log.info("train-controller: continuing CMA-ES from %s", start)
        elif saved is not None:
            state = _fresh(size) | {"generation": int(saved["generation"]), "history": list(saved["history"]),
                                    "best": saved["best"].numpy(), "best_fitness": float(saved["best_fitness"])}
            if "top" in saved:  # controller.select keeps its candidates
                state |= {"top": saved["top"].numpy(), "top_fitness": saved["top_fitness"].numpy()}
            log.info("train-controller: resuming after generation %d", state["generation"])
        else:
            es = cma_internals.new(np.zeros(size), c.sigma0, {
                "popsize": c.popsize, "seed": seeds.seed(cfg, "controller.cma") % 2**31 + 1,
                "CMA_diagonal": c.diagonal, "verbose": -9, "maxiter": 10**9, "tolflatfitness": 10**9,
                "tolfun": 0, "tolx": 0, "tolstagnation": 10**9})
            state = _fresh(size)
        log.info("train-controller: %s parameters per controller, population %d x %d rollouts %s, %d rank(s) on %s",
                 f"{size:,}", c.popsize, c.rollouts, training_games(cfg), group.size, ", ".join(sorted(set(group.hosts))))
    generation = group.bcast(state["generation"] if state else None)

    tracker = Tracker(cfg, run, STAGE, total=c.generations, done=generation, unit="generations") if group.rank == 0 else None
    envs = EnvPool(training_env(cfg))  # this rank's environments, loaded once for every generation
    with tracker or contextlib.nullcontext(), StopFlag() as stop:
        while generation < c.generations:
            if group.bcast(stop.requested if group.rank == 0 else None):
                raise Interrupted(stop.signum or signal.SIGTERM)  # every rank, together
            asked = cma_internals.ask(es) if group.rank == 0 else None
            solutions = group.bcast(np.asarray(asked) if group.rank == 0 else None)
            jobs = [(p, r) for p in range(len(solutions)) for r in range(c.rollouts)]
            returns = _evaluate_share(cfg, group, workers, vae, mdnrnn, starts, solutions, jobs, generation,
                                      "controller.train", stop, envs)
            rescored = None
            if c.rescore_every and (generation + 1) % c.rescore_every == 0:
                mean = group.bcast(np.asarray(es.mean)[None] if group.rank == 0 else None)
                rescored = _evaluate_share(cfg, group, workers, vae, mdnrnn, None, mean, [(0, r) for r in range(c.rescore_rollouts)],
                                           generation, "controller.rescore", stop, envs, mode="real")
            if group.rank == 0:
                fitness = returns.reshape(len(solutions), c.rollouts).mean(axis=1)
                # cma minimises; it is told the arrays it asked with, not the broadcast's copies, whose
                # unpickled dtypes would pickle into the checkpoint differently under MPI
                cma_internals.tell(es, asked, list(-fitness))
                record = {"generation": generation + 1, "best": float(fitness.max()), "mean": float(fitness.mean()),
                          "worst": float(fitness.min()), "sigma": float(es.sigma)}
                if rescored is not None:  # the mean this generation's candidates were drawn around
                    record["mean_rescored"] = float(rescored.mean())
                state["history"].append(record)
                if fitness.max() > state["best_fitness"]:
                    # a copy: a view would save the whole population's storage with it
                    state["best_fitness"], state["best"] = float(fitness.max()), solutions[int(fitness.argmax())].copy()
                if c.select:
                    _keep_top(state, solutions, fitness, c.select)
            # the last generation's checkpoint, which finishes the stage, holds the selection: a run
            # cut during it replays the generation (the same returns) and selects again
            selection = None
            if c.select and generation + 1 == c.generations:
                selection = _select(cfg, group, workers, vae, mdnrnn, state, generation, stop, envs)
            generation += 1
            if group.rank == 0:
                extra = {}
                if selection is not None:
                    extra = {"selected": torch.from_numpy(state["top"][selection["chosen"]].copy()), "selection": selection}
                    state["history"][-1]["selected_rescored"] = selection["rescored"][selection["chosen"]]
                if c.select:
                    extra |= {"top": torch.from_numpy(state["top"]), "top_fitness": torch.from_numpy(state["top_fitness"])}
                ckpt.save(generation, {"generation": generation, "es": es_bytes(es), "size": size,
                                       "history": state["history"], "best": torch.from_numpy(np.asarray(state["best"])),
                                       "best_fitness": state["best_fitness"],
                                       "mean": torch.from_numpy(np.asarray(es.mean, dtype=np.float64)), **extra},
                          summary={"best_fitness": state["best_fitness"]})
                tracker.advance(1, **{f"{STAGE}/{k}": v for k, v in state["history"][-1].items() if k != "generation"})
        if tracker is not None:
            from worldmodels.plots import plot_fitness

            tracker.images({f"{STAGE}/fitness": plot_fitness(run, state["history"], training_games(cfg))})
    if group.rank != 0:
        return {"generation": generation}
    return {"generation": generation, "best_fitness": state["best_fitness"]}


def _fresh(size: int) -> dict[str, Any]:
    """The state of a CMA-ES run before its first generation (also a later round's first start)."""
    return {"generation": 0, "history": [], "best": np.zeros(size), "best_fitness": -np.inf,
            "top": np.zeros((0, size)), "top_fitness": np.zeros(0)}


def _keep_top(state: dict[str, Any], solutions: np.ndarray, fitness: np.ndarray, k: int) -> None:
    """The k candidates of highest fitness so far (earlier ones first among equals: a stable sort)."""
    top = np.concatenate([state["top"], np.asarray(solutions, dtype=np.float64)])
    top_fitness = np.concatenate([state["top_fitness"], fitness])
    order = np.argsort(-top_fitness, kind="stable")[:k]
    state["top"], state["top_fitness"] = top[order], top_fitness[order]


def _select(cfg: Config, group, workers: list[int], vae, mdnrnn, state, generation: int, stop,
            envs: EnvPool) -> dict[str, Any] | None:
    """Every rank plays its share of the top candidates' `select_rollouts` episodes (the same seeds
    for every candidate, a stream of their own) under each of `select_protocols` (None: the
    training games' own); rank 0 returns the candidate whose mean over the protocols' means is highest."""
    c = cfg.controller
    top = group.bcast(state["top"] if group.rank == 0 else None)
    jobs = [(i, r) for i in range(len(top)) for r in range(c.select_rollouts)]
    means = {}
    for protocol in c.select_protocols:
        # the training pool where its games are the protocol's (the demo's v4), else one of the protocol's own
        wanted = envs.cfg if protocol is None else protocol_env(cfg, protocol)
        pool = envs if wanted == envs.cfg else EnvPool(wanted)
        returns = _evaluate_share(cfg, group, workers, vae, mdnrnn, None, top, jobs, generation, "controller.select",
                                  stop, pool, mode="real")
        if group.rank == 0:
            means[protocol] = returns.reshape(len(top), c.select_rollouts).mean(axis=1)
    if group.rank != 0:
        return None
    rescored = np.mean(list(means.values()), axis=0)
    chosen = int(np.argmax(rescored))

    def listed(values) -> str:
        return ", ".join(f"{f:.0f}" for f in values)

    named = " and ".join(p for p in means if p is not None)
    each = listed(rescored)
    if len(means) > 1:
        each = "; ".join(f"{p}: {listed(m)}" for p, m in means.items()) + f"; mean: {each}"
    log.info("train-controller: of the %d candidates of highest fitness (%s), re-scored on %d episodes each%s (%s), "
             "candidate %d plays", len(top), listed(state["top_fitness"]), c.select_rollouts,
             f" under {named}" if named else "", each, chosen)
    selection = {"chosen": chosen, "fitness": [float(f) for f in state["top_fitness"]], "rescored": [float(f) for f in rescored]}
    if len(means) > 1:  # each protocol's means beside the mean over them that chose
        selection["protocols"] = {p: [float(f) for f in m] for p, m in means.items()}
    return selection


def _evaluate_share(cfg: Config, group, workers: list[int], vae, mdnrnn, starts, solutions, jobs, generation, stream,
                    stop, envs: EnvPool, mode: str | None = None) -> np.ndarray | None:
    """Each evaluating rank plays its contiguous share of `jobs`; rank 0 gets all returns in order."""
    mine: list[tuple[int, int]] = []
    if group.rank in workers:
        mine = [jobs[i] for i in share(len(jobs), workers.index(group.rank), len(workers))]
    if (mode or cfg.controller.mode) == "dream":
        returns = dream_returns(cfg, mdnrnn, starts, solutions, mine, generation)
    else:
        returns = real_returns(cfg, vae, mdnrnn, solutions, mine, generation, stream, stop if group.size == 1 else None, envs)
    gathered = group.gather(returns)
    return np.concatenate(gathered) if group.rank == 0 else None
