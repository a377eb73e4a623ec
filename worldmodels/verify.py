"""`verify RUN_DIR [--repair]`: check every dataset chunk and every checkpoint of a run.

Each committed episode's chunks are read back (each carries a crc32c checksum) and each checkpoint
is checked against its marker and loaded. `--repair` makes damage something a rerun fixes: a
damaged episode is uncommitted (its index length removed), so that rerunning the stage that
wrote it (collect or encode) writes exactly that episode again, the same as before since episodes
are deterministic; a damaged checkpoint is set aside as `*.repaired`, so that the training stage
resumes from the one before it (or starts over, when none is left: the same steps again). A
chunk or checkpoint whose read fails (an I/O error, not a failed checksum) is reported and never
dropped or set aside: it may read back whole later. Stores and checkpoints reused from another
run (`--from`) are checked but repaired only in the run that owns them.
"""

from __future__ import annotations

from pathlib import Path

from worldmodels import lease
from worldmodels.checkpoint import Checkpointer, load_file
from worldmodels.dataset import EpisodeStore
from worldmodels.errors import DataError, StorageError, unreadable
from worldmodels.rundir import CHECKPOINTS, RunDir

STORES = {"collect": "rollouts", "encode": "latents"}


def verify(run_dir: str | Path, repair: bool = False) -> tuple[list[str], list[str], bool]:
    """(problems, lines for people, whether the run is sound now)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise DataError(f"no run directory {run.path}")
    if not run.config_file.is_file():  # nothing would be checked, and "sound" said of it
        from worldmodels.sweep import Sweep

        what = "a sweep folder: verify each of its points" if Sweep.is_sweep(run.path) else "not a run directory"
        raise DataError(f"{run.path} is {what} (no {run.config_file.name})")
    holders = lease.live_holders(run.path)
    if holders and repair:  # never change what a running stage is writing
        holder = holders[0]
        raise DataError(f"{holder['lease'].stem} is running in {run.path} ({lease.who(holder)}): repair once it has stopped")
    running = {lease.stage_of(holder["lease"]): holder for holder in holders}
    problems, notes, unrepaired, rerun = [], [], 0, []
    for stage, attr in STORES.items():
        path = getattr(run, attr)
        fixed = repair and run.owner(stage) is run
        try:
            if not EpisodeStore.exists(path):
                continue
            found, episodes = _store_damage(EpisodeStore.open(path, mode="r"), fixed)
        except (DataError, StorageError) as exc:  # a store that cannot be opened, or a chunk that cannot be read now
            problems.append(str(exc))
            unrepaired += 1
            continue
        problems += found
        notes.append(f"{path}: {episodes} episodes read back, {len(found)} damaged chunks")
        if found and fixed:
            rerun.append(stage)
        elif found:
            unrepaired += len(found)
    for stage in CHECKPOINTS:
        directory = run.checkpoints(stage)
        if not directory.is_dir():
            continue
        if stage in running:  # its newest checkpoint may be half written, an old one pruned as it is read
            notes.append(f"{directory}: not checked, {stage} is running ({lease.who(running[stage])})")
            continue
        fixed = repair and run.owner(stage) is run
        ckpt = Checkpointer(directory, every_steps=1, every_s=0, keep=1)
        steps, bad, unread = ckpt.steps(), 0, 0
        for step in steps:
            try:
                load_file(directory / f"step-{step:09d}.pt")
            except DataError as exc:
                problems.append(str(exc))
                bad += 1
                if fixed:
                    ckpt.set_aside(step, suffix="repaired")
            except StorageError as exc:  # not known to be damaged: never set aside, and not sound either
                problems.append(str(exc))
                unread += 1
        torn = list(directory.glob(".step-*.tmp"))
        for leftover in torn:
            problems.append(f"{leftover}: left by a write that was killed midway")
            if fixed:
                leftover.unlink(missing_ok=True)
        # with none left that verifies, checkpoints a resume set aside as *.corrupt refuse a start over (Checkpointer.resume)
        refusing = bad == len(steps) and bool(ckpt.corrupt())
        if refusing and not bad:
            problems.append(f"{directory}: no checkpoint left but some set aside as *.corrupt: {stage} refuses to "
                            "start over")
        notes.append(f"{directory}: {len(steps)} checkpoints checked, {bad} damaged"
                     + (f", {unread} unread" if unread else ""))
        if fixed and (bad or refusing):
            if refusing:  # the rerun this asks for would be refused
                ckpt.lift_corrupt()
            rerun.append(stage)
        elif not fixed:
            unrepaired += bad + len(torn) + (refusing and not bad)
        unrepaired += unread
    if rerun:
        notes.append("repaired: rerun " + ", ".join(rerun) + " to make again exactly what was dropped")
    if problems and unrepaired and repair:
        notes.append("not repaired here: damage in what this run reuses from another (repair it there), a store "
                     "that cannot be opened or a file that cannot be read now")
    return problems, notes, not unrepaired


def _store_damage(store: EpisodeStore, repair: bool) -> tuple[list[str], int]:
    """Lines naming each damaged episode's chunks (uncommitting it when `repair`), and the number read."""
    try:
        lengths = store.lengths()
        undecodable = []
    except DataError:  # an index chunk itself is damaged: find which, one entry at a time
        lengths, undecodable = [], []
        for k in range(store.num_episodes):
            try:
                lengths.append(int(store.array("episodes/length")[k]))
            except OSError as exc:  # a read that failed: not damage, never dropped
                raise unreadable(store.describe_chunk("episodes/length", k, k), exc) from exc
            except Exception:
                lengths.append(0)
                undecodable.append(k)
    found = []
    for k in undecodable:
        found.append(f"{store.describe_chunk('episodes/length', k, k)} does not verify")
        if repair:
            store.uncommit(k)
    committed = [k for k, n in enumerate(lengths) if n > 0]
    for k in committed:
        damaged = store.damaged_chunks(k)
        for name, chunk, why in damaged:
            found.append(f"{store.describe_chunk(name, chunk, k)} {why}")
        if damaged and repair:
            store.uncommit(k)
    return found, len(committed) + len(undecodable)
