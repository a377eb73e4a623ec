"""Typed, frozen configuration: one dataclass per stage, YAML presets, `key.sub=value` overrides.

The dataclass defaults are the base layer (paper scale). A preset in `configs/` overrides some of
them and may name another preset under `extends:` to layer on it; command-line overrides come
last. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from worldmodels.errors import ConfigError

PRECISIONS = ("float32", "int8")  # vae.precision


@dataclass(frozen=True)
class EnvConfig:
    """The Atari environment and its standard wrapper stack."""

    id: str = "SpaceInvadersNoFrameskip-v4"  # a gymnasium ALE id with frameskip 1 (a NoFrameskip id)
    frame_skip: int = 4  # emulator frames per agent step; the last two are max-pooled
    noop_max: int = 30  # each episode starts with 1..noop_max no-op frames (0: none; seeded per episode)
    size: int = 64  # observations are size x size RGB uint8
    max_steps: int = 27_000  # agent steps before an episode is truncated (108,000 frames)
    # chance that the emulator repeats the previous action instead of the chosen one, per frame:
    # 0 is the v4 protocol; 0.25 is sticky actions (Machado et al. 2018), where a fixed policy
    # cannot replay memorised games. Drawn from the episode's seed, so episodes stay reproducible.
    repeat_action_probability: float = 0.0

    def __post_init__(self) -> None:
        _check(self.frame_skip >= 2, "env.frame_skip", "must be >= 2 (the last two frames are max-pooled)")
        _check(self.noop_max >= 0, "env.noop_max", "must be >= 0")
        _check(8 <= self.size <= 210, "env.size", "must be between 8 and 210")
        _check(self.max_steps >= 1, "env.max_steps", "must be >= 1")
        _check(0.0 <= self.repeat_action_probability < 1.0, "env.repeat_action_probability", "must be in [0, 1)")


@dataclass(frozen=True)
class CollectConfig:
    """Rollout collection into `data/rollouts.zarr`."""

    episodes: int = 10_000  # episodes in the dataset (the paper used 10,000 random rollouts)
    policy: str = "random"  # which policy plays round 0: "random" (see worldmodels.policies); later rounds play the previous round's controller
    action_repeat_max: int = 10  # the random policy holds each action for 1..N agent steps
    envs_per_task: int = 1  # episodes a task plays in lockstep (one batched policy call per step)
    chunk_steps: int = 128  # steps per Zarr chunk along time (the read unit of the loaders)
    seed: int | None = None  # seed of the episodes and the behaviour policy (default: the run seed)

    def __post_init__(self) -> None:
        _check(self.episodes >= 1, "collect.episodes", f"must be >= 1, got {self.episodes}")
        _check(self.action_repeat_max >= 1, "collect.action_repeat_max", "must be >= 1")
        _check(self.envs_per_task >= 1, "collect.envs_per_task", "must be >= 1")
        _check(self.chunk_steps >= 1, "collect.chunk_steps", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """What every training stage shares: device, checkpoint cadence, logging cadence."""

    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    checkpoint_every_steps: int = 1000  # save after this many steps ...
    checkpoint_every_s: float = 600.0  # ... or this many seconds, whichever comes first
    keep_checkpoints: int = 3  # the last K checkpoints are kept
    log_every_steps: int = 50  # metrics are logged every N steps

    def __post_init__(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", f"must be auto, cpu or cuda, got {self.device!r}")
        _check(self.checkpoint_every_steps >= 1, "train.checkpoint_every_steps", "must be >= 1")
        _check(self.checkpoint_every_s > 0, "train.checkpoint_every_s", "must be > 0")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        _check(self.log_every_steps >= 1, "train.log_every_steps", "must be >= 1")


@dataclass(frozen=True)
class VAEConfig:
    """V: the convolutional VAE and its training (train-vae)."""

    z_size: int = 32  # latent size (the paper: 32 for CarRacing, 64 for Doom)
    channels: int = 32  # the first conv's channels, doubled by each of the next three (the paper: 32)
    # The arithmetic of V's encoder wherever it encodes frames (the encode stage, and every game a
    # controller plays), not in training: float32, or int8 (worldmodels.int8: CPU kernels, several
    # times faster; on a GPU V stays in float32, with a warning)
    precision: str = "float32"
    kl_tolerance: float = 0.5  # KL per frame is floored at kl_tolerance * z_size nats
    lr: float = 1e-4  # Adam learning rate
    batch_size: int = 100  # frames per step
    steps: int = 100_000  # optimizer steps (about 1 epoch of 10,000 episodes per 10,000 steps)
    block_chunks: int = 64  # frame chunks shuffled together in memory (bounds the loader's memory)
    loader_workers: int = 1  # threads reading the next blocks ahead
    compile: bool = False  # torch.compile the model (CUDA only; uncompiled with a warning where the compiler fails on V)
    seed: int | None = None  # seed of V's initialisation, batches and noise (default: the run seed)

    def __post_init__(self) -> None:
        _check(self.z_size >= 1, "vae.z_size", "must be >= 1")
        _check(self.channels >= 1, "vae.channels", "must be >= 1")
        _check(self.precision in PRECISIONS, "vae.precision", f"must be one of {', '.join(PRECISIONS)}")
        _check(self.lr > 0, "vae.lr", "must be > 0")
        _check(self.kl_tolerance >= 0, "vae.kl_tolerance", "must be >= 0")
        _check(self.batch_size >= 1, "vae.batch_size", "must be >= 1")
        _check(self.steps >= 1, "vae.steps", "must be >= 1")
        _check(self.block_chunks >= 1, "vae.block_chunks", "must be >= 1")
        _check(self.loader_workers >= 1, "vae.loader_workers", "must be >= 1")


@dataclass(frozen=True)
class EncodeConfig:
    """encode: every episode's frames to per-step mu and logvar in data/latents.zarr."""

    vae: str = ""  # a VAE checkpoint file to encode with ("": this run's finished train-vae)
    batch_size: int = 512  # frames per encoder call

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "encode.batch_size", "must be >= 1")


@dataclass(frozen=True)
class MDNRNNConfig:
    """M: the MDN-RNN and its training on latent sequences (train-mdnrnn)."""

    hidden: int = 256  # LSTM units
    gaussians: int = 5  # mixture components per latent dimension
    seq_len: int = 500  # steps per training sequence (episodes are cut into windows)
    batch_size: int = 100  # sequences per step
    lr: float = 1e-3  # Adam learning rate
    grad_clip: float = 1.0  # gradient norm clip
    steps: int = 20_000  # optimizer steps (0: M keeps its random initialisation, the untrained-M ablation)
    reward_scale: float = 0.1  # the reward head predicts reward * reward_scale
    done_weight: float = 10.0  # weight of game-over steps in the done loss (they are rare)
    block_episodes: int = 64  # episodes shuffled together in memory
    loader_workers: int = 1  # threads reading the next blocks ahead
    tau: float = 1.15  # sampling temperature of dreams
    seed: int | None = None  # seed of M's initialisation, batches and noise (default: the run seed)

    def __post_init__(self) -> None:
        for key in ("hidden", "gaussians", "seq_len", "batch_size", "block_episodes", "loader_workers"):
            _check(getattr(self, key) >= 1, f"mdnrnn.{key}", "must be >= 1")
        _check(self.steps >= 0, "mdnrnn.steps", f"must be >= 0 (0: untrained), got {self.steps}")
        _check(self.lr > 0, "mdnrnn.lr", "must be > 0")
        _check(self.grad_clip > 0, "mdnrnn.grad_clip", "must be > 0")
        _check(self.tau > 0, "mdnrnn.tau", "must be > 0")
        _check(self.reward_scale > 0, "mdnrnn.reward_scale", "must be > 0 (dream rewards are divided by it)")
        _check(self.done_weight > 0, "mdnrnn.done_weight", "must be > 0")


# What C sees, by name (the features of its linear map, in this order): V's z alone; z and M's
# hidden state h (the paper's); z, h and the LSTM's cell state c.
INPUTS = {"z": ("z",), "zh": ("z", "h"), "zhc": ("z", "h", "c")}


@dataclass(frozen=True)
class ControllerConfig:
    """C: the linear controller found by CMA-ES (train-controller)."""

    mode: str = "real"  # where candidates are scored: "real" (the game) or "dream" (inside M)
    inputs: str = "zh"  # what C sees (INPUTS): z, zh (the paper) or zhc; sets C's size (z: 198 numbers, zh: 1,734)
    popsize: int = 64  # CMA-ES population
    rollouts: int = 16  # episodes per candidate; all candidates of a generation share their seeds
    # The protocol (PROTOCOLS) the training games are played under, on the run's data, V and M;
    # null: the run's own env. "sticky" scores candidates where a policy cannot replay its games.
    protocol: str | None = None
    generations: int = 300  # explicit budget (cma's own stop rules end early on integer scores)
    sigma0: float = 0.1  # initial step size
    diagonal: bool = False  # separable CMA-ES (much faster ask/tell for large controllers)
    batch: int = 64  # episodes a rank plays in lockstep (one batched V/M/C forward per step)
    master_evaluates: bool = True  # rank 0 plays its share too (false: it only asks and tells)
    heartbeat_s: float = 60.0  # under MPI, a rank silent this long stops the job, which requeues
    rescore_every: int = 25  # re-score the mean in the real game every G generations (0: never)
    rescore_rollouts: int = 64  # episodes of that re-scoring
    # After the last generation, the `select` candidates of highest fitness (over every generation)
    # play `select_rollouts` more episodes each, on seeds of their own, and the best of them is the
    # one that plays ("best"): a candidate's fitness from a few rollouts is much luck. 0: the
    # candidate of highest fitness plays. Real game only. `select_protocol` (PROTOCOLS) plays those
    # episodes under an evaluation protocol instead of the training games' own: "sticky" chooses the
    # candidate that best survives sticky actions; a list plays them under each protocol, and the
    # mean of its protocols' means ranks a candidate ([v4, sticky]: the one that plays both best).
    select: int = 0
    select_rollouts: int = 16
    select_protocol: str | tuple[str, ...] | None = None
    dream_steps: int = 1000  # longest dream (steps)
    seed: int | None = None  # seed of CMA-ES and of the training rollouts (default: the run seed)

    def __post_init__(self) -> None:
        _check(self.mode in ("real", "dream"), "controller.mode", f"must be real or dream, got {self.mode!r}")
        _check(self.inputs in INPUTS, "controller.inputs", f"must be one of {', '.join(INPUTS)}, got {self.inputs!r}")
        _check(self.popsize >= 2, "controller.popsize", f"must be >= 2, got {self.popsize}")
        for key in ("rollouts", "generations", "batch", "rescore_rollouts", "select_rollouts", "dream_steps"):
            _check(getattr(self, key) >= 1, f"controller.{key}", "must be >= 1")
        _check(self.sigma0 > 0, "controller.sigma0", "must be > 0")
        _check(self.heartbeat_s > 0, "controller.heartbeat_s", f"must be > 0 seconds, got {self.heartbeat_s}")
        _check(self.rescore_every >= 0, "controller.rescore_every", "must be >= 0")
        _check(self.select >= 0, "controller.select", f"must be >= 0, got {self.select}")
        _check(not (self.select and self.mode == "dream"), "controller.select",
               "re-scores candidates in the real game: set it to 0 with controller.mode=dream")
        _check(self.protocol in (None, *PROTOCOLS), "controller.protocol",
               f"must be one of {', '.join(PROTOCOLS)} (or null: the run's env), got {self.protocol!r}")
        _check(not (self.protocol and self.mode == "dream"), "controller.protocol",
               "sets the real game's protocol: leave it null with controller.mode=dream")
        chosen = self.select_protocols
        _check(bool(chosen) and len(set(chosen)) == len(chosen) and all(p in (None, *PROTOCOLS) for p in chosen),
               "controller.select_protocol", f"must be one of {', '.join(PROTOCOLS)}, a list of distinct ones, or null "
               f"(the training games' own), got {self.select_protocol!r}")

    @property
    def select_protocols(self) -> tuple[str | None, ...]:
        """The protocols the selection plays under, as a tuple (None: the training games' own)."""
        return self.select_protocol if isinstance(self.select_protocol, tuple) else (self.select_protocol,)


# The evaluation protocols by name: the emulator's repeat-action probability under each. "v4" is
# SpaceInvadersNoFrameskip-v4's (none: a fixed policy replays at most noop_max different games);
# "sticky" is Machado et al. (2018)'s 0.25, behind most recent published Atari curves.
PROTOCOLS = {"v4": 0.0, "sticky": 0.25}


def protocol_env(cfg: Config, protocol: str | None) -> EnvConfig:
    """The environment config of a protocol: the run's, with the protocol's sticky actions (None: the run's own)."""
    if protocol is None:
        return cfg.env
    return dataclasses.replace(cfg.env, repeat_action_probability=PROTOCOLS[protocol])


@dataclass(frozen=True)
class EvaluateConfig:
    """evaluate: the controller, the random policy and fixed heuristics on the same episodes."""

    episodes: int = 100  # the paper's protocol: mean and std over 100 episodes, per protocol
    protocols: tuple[str, ...] = ("v4", "sticky")  # every policy plays the episodes under each; the first is the headline
    controller: str = "best"  # which solution plays: "best" (highest fitness, or the selected one: controller.select) or "mean" (CMA-ES mean)
    videos: int = 3  # episodes recorded to eval/videos/*.mp4
    batch: int = 16  # episodes played in lockstep
    seed: int | None = None  # seed of the evaluation episodes (default: the run seed)

    def __post_init__(self) -> None:
        _check(self.episodes >= 1, "evaluate.episodes", "must be >= 1")
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        _check(bool(self.protocols) and not unknown and len(set(self.protocols)) == len(self.protocols),
               "evaluate.protocols", f"must list distinct protocols of {', '.join(PROTOCOLS)}, got {list(self.protocols)}")
        _check(self.controller in ("best", "mean"), "evaluate.controller", f"must be best or mean, got {self.controller!r}")
        _check(self.videos >= 0, "evaluate.videos", "must be >= 0")
        _check(self.batch >= 1, "evaluate.batch", "must be >= 1")


@dataclass(frozen=True)
class RoundsConfig:
    """Iterative training (worldmodels.rounds): round k >= 1, in RUN_DIR/rounds/k, collects new episodes
    with round k-1's controller, then continues V and M on every round's episodes and C from CMA-ES's state."""

    count: int = 1  # rounds in all (1: the plain pipeline); the CLI's --round R runs a stage of round R
    explore: float = 0.1  # chance per step that the collecting controller hands over to a random action, held 1..collect.action_repeat_max steps
    index: int = 0  # the round a run directory holds: set by --round, not by hand

    def __post_init__(self) -> None:
        _check(self.count >= 1, "rounds.count", f"must be >= 1, got {self.count}")
        _check(0.0 <= self.explore <= 1.0, "rounds.explore", f"must be in [0, 1], got {self.explore}")
        _check(0 <= self.index < self.count, "rounds.index",
               f"must be a round of rounds.count={self.count} (0..{self.count - 1}), got {self.index}")


@dataclass(frozen=True)
class LoggingConfig:
    """Progress output and experiment tracking, shared by every stage."""

    every_s: float = 30.0  # seconds between plain log lines when stderr is not a terminal
    wandb: bool = True  # track metrics with wandb (offline unless WANDB_MODE says otherwise)
    project: str = "worldmodels-spaceinvaders"  # wandb project

    def __post_init__(self) -> None:
        _check(self.every_s > 0, "logging.every_s", "must be > 0")


@dataclass(frozen=True)
class Config:
    """A whole experiment: every stage's settings and the run seed."""

    seed: int = 0  # the run seed; every episode and model seed derives from it
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    mdnrnn: MDNRNNConfig = field(default_factory=MDNRNNConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", "must be >= 0")
        for section in SEEDED:
            own = getattr(self, section).seed
            _check(own is None or own >= 0, f"{section}.seed", "must be >= 0")

    def seed_of(self, section: str) -> int:
        """The seed a stage's section draws from: its own `seed`, or the run seed when unset."""
        own = getattr(self, section).seed
        return self.seed if own is None else own


SEEDED = ("collect", "vae", "mdnrnn", "controller", "evaluate")  # sections with a seed of their own


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


# --- building a Config from nested dicts ---------------------------------------------------------


def from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from nested plain data, rejecting unknown keys and wrong types."""
    return _build(Config, data, prefix="")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain data (YAML-safe: tuples become lists) of a Config or any of its sections."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(hint, value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(option, value, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' must be {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, key) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string; people write learning rates that way.
        with contextlib.suppress(ValueError):
            value = float(value)  # and checked below like any float ("inf" and "nan" parse too)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be {_type_name(hint)}, got {value!r}")
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"config key '{key}' must be {_type_name(hint)}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# --- presets and overrides ------------------------------------------------------------------------


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve a preset file (with its `extends:` chain) and `key.sub=value` overrides."""
    data: dict[str, Any] = _read_preset(Path(path), seen=()) if path else {}
    return _overridden(data, overrides)


def override(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """`cfg` with `key.sub=value` overrides applied (checked like a preset's values)."""
    return _overridden(to_dict(cfg), overrides)


def _overridden(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Config:
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key, value)
    return from_dict(data)


def parse_override(item: str) -> tuple[str, Any]:
    """Split `key.sub=value`; the value is parsed as YAML (`4`, `0.5`, `true`, `[1, 2]`, `text`)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _read_preset(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        named = f" (named by 'extends' in '{seen[-1]}')" if seen else ""
        raise ConfigError(f"config file '{path}' {'is a folder' if path.is_dir() else 'does not exist'}{named}")
    if path.resolve() in seen:
        raise ConfigError(f"config file '{path}' extends itself")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:  # an empty file would silently mean the paper-scale defaults
        raise ConfigError(f"config file '{path}' is empty: use a preset (configs/demo.yaml for 2 cores, "
                          "configs/spaceinvaders.yaml for the paper's scale) or start it with 'extends: PRESET'")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _read_preset(path.parent / parent, seen + (path.resolve(),))
    return _merge(base, data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def diff(saved: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts, one `key: a -> b` each."""
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key, "<absent>"), given.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff(a, b, prefix=f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} (saved) != {b!r} (given)")
    return out


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as {"section.key": value}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump(cfg: Config) -> str:
    """The resolved config as YAML text, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
