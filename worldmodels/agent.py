"""An agent: the V, M and C of a finished run, as a folder anyone can load and play.

    FOLDER/config.yaml                        the run's resolved config
    FOLDER/models/{vae,mdnrnn,controller}.pt  weights only (no optimizer or CMA-ES state), each
    FOLDER/models/*.json                      with its marker (size and sha256, checked on load)

`push` uploads such a folder (plus results, replay and report) to the Hugging Face Hub. `Agent.load`
reads it back from a folder, from a run directory, or from a Hub repository id, and `play` plays
the evaluation's episodes (the same seeds) with it, so a downloaded agent can be checked against
the scores its card reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from worldmodels import config as config_lib
from worldmodels.config import Config
from worldmodels.errors import DataError
from worldmodels.rundir import CHECKPOINTS, RunDir, controller_from, mdnrnn_from, vae_from

# what each model file keeps of its stage's final checkpoint: what playing needs, nothing to resume
KEPT = {"vae": ("model", "z_size"), "mdnrnn": ("model", "z_size", "actions"), "controller": ("best", "mean")}
# the candidate controller.select chose, when it ran; V's channels and int8 ranges, when its file is that recent
KEPT_IF_MADE = {"vae": ("channels", "int8_ranges"), "controller": ("selected",)}
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
def model_file(folder: Path, stage: str) -> Path:
    return folder / "models" / f"{CHECKPOINTS[stage]}.pt"


def write_folder(cfg: Config, run: RunDir, folder: Path) -> Path:
    """Write the agent of a finished run into `folder`: its config and its three models."""
    from worldmodels.checkpoint import load_file, save_file
    from worldmodels.stages import STAGES

    for stage in CHECKPOINTS:
        state = load_file(run.finished_checkpoint(stage, STAGES[stage].units(cfg)))
        name = CHECKPOINTS[stage]
        kept = KEPT[name] + tuple(key for key in KEPT_IF_MADE.get(name, ()) if key in state)
        save_file(model_file(folder, stage), {key: state[key] for key in kept})
    (folder / "config.yaml").write_text(config_lib.dump(cfg))
    return folder


@dataclass
class Agent:
    cfg: Config
    vae: Any
    mdnrnn: Any
    solution: np.ndarray  # the controller vector (evaluate.controller: best or mean)
    source: str  # where it was loaded from, for people

    @classmethod
    def load(cls, source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "Agent":
        """From an agent folder, a run directory or a Hub repository id (USER/NAME, needs the network).
        `overrides` change how it plays (e.g. evaluate.episodes), never what it is."""
        from worldmodels.controller import controller_size

        path = Path(source)
        if not path.exists() and REPO_ID.fullmatch(str(source)):
            path = _download(str(source))
        if (path / "models").is_dir() and (path / "config.yaml").is_file():
            cfg = config_lib.load(path / "config.yaml", overrides)
            vae, mdnrnn = (vae_from(model_file(path, "train-vae"), cfg), mdnrnn_from(model_file(path, "train-mdnrnn"), cfg))
            controller = lambda size: controller_from(model_file(path, "train-controller"), cfg, size)  # noqa: E731
        else:
            run = RunDir(path)
            saved = run.saved_config() if path.is_dir() else None
            if saved is None:
                raise DataError(f"no agent at {source}: not an agent folder (models/ and config.yaml), a run directory "
                                "or a Hub repository id (USER/NAME)")
            cfg = config_lib.override(saved, overrides)
            vae, mdnrnn = run.load_vae(cfg), run.load_mdnrnn(cfg)
            controller = lambda size: run.load_controller(cfg, size)[0]  # noqa: E731
        return cls(cfg, vae, mdnrnn, controller(controller_size(cfg.vae.z_size, mdnrnn.hidden, mdnrnn.actions, cfg.controller.inputs)), str(source))

    def policy(self, batch: int):
        import torch

        from worldmodels.controller import WorldModelPolicy

        return WorldModelPolicy(self.vae, self.mdnrnn, torch.from_numpy(self.solution[None]), batch, self.cfg.controller.inputs)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["config.yaml", "models/*"]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        # USER/NAME is also how a mistyped local path looks: say both
        raise DataError(f"no folder {repo_id} here, and cannot download the agent {repo_id} from the Hugging Face Hub: "
                        f"{str(exc).splitlines()[0]}") from None


def play(agent: Agent, episodes: int, video: Path | None = None, protocol: str | None = None,
         on_score: Callable[[int, int, float], None] = lambda k, seed, score: None) -> list[float]:
    """Play evaluation episodes 0..episodes-1 (the evaluate stage's seeds) on the CPU under an
    evaluation `protocol` (config.PROTOCOLS; default: the evaluation's first); returns their scores
    in episode order. With `video`, episode 0 is also recorded there."""
    import torch

    from worldmodels.config import protocol_env
    from worldmodels.evaluate import eval_job
    from worldmodels.rollout import play as play_jobs
    from worldmodels.video import record_episode

    cfg = agent.cfg
    env = protocol_env(cfg, protocol or cfg.evaluate.protocols[0])
    scores: dict[int, float] = {}

    def done(played) -> None:
        scores[played.job.k] = played.ret
        on_score(played.job.k, played.job.seed, played.ret)

    batch = max(1, min(cfg.evaluate.batch, episodes))
    with torch.no_grad():
        play_jobs(env, agent.policy(batch), [eval_job(cfg, k) for k in range(episodes)], done, batch=batch)
        if video is not None:
            record_episode(env, agent.policy(1), eval_job(cfg, 0), video)
    return [scores[k] for k in range(episodes)]
