"""Gameplay videos: one episode at the emulator's full resolution, as an MP4 (H.264, via moviepy)."""

from __future__ import annotations

import shutil
from pathlib import Path

from worldmodels.config import EnvConfig


def record_episode(env_cfg: EnvConfig, policy, job, path: Path, stop=None) -> float:
    """Play `job` with `policy` (made for a batch of 1) and write the gameplay to `path`; returns
    the score. The video is recorded in a folder of its own (gymnasium's RecordVideo warns about
    existing ones) and moved into place when complete: a killed recording leaves no torn file."""
    import gymnasium as gym

    from worldmodels.envs import AtariEnv
    from worldmodels.rollout import play

    recording = path.parent / f".recording-{path.stem}"
    shutil.rmtree(recording, ignore_errors=True)
    env = gym.wrappers.RecordVideo(AtariEnv(env_cfg, render_mode="rgb_array"), str(recording),
                                   episode_trigger=lambda i: True, name_prefix="episode", disable_logger=True)
    scores: list[float] = []
    try:
        play(env_cfg, policy, [job], lambda played: scores.append(played.ret), batch=1, envs=[env], stop=stop)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    (recording / "episode-episode-0.mp4").replace(path)
    shutil.rmtree(recording)
    return scores[0]
