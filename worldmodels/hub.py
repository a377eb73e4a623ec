"""push: a finished run as a Hugging Face Hub model repository.

The folder is the agent (worldmodels.agent: config and models) plus what a reader of the card wants:
results.json, replay.mp4 (the controller playing evaluation episode 0), the report, and a README.md
model card whose `model-index` metadata follows the Hub's convention for RL agents (task
reinforcement-learning, dataset the environment id, metric mean_reward as "mean +/- std"), so the
Hub lists the agent with its score.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError
from worldmodels.reference import PUBLISHED, PUBLISHED_SOURCE
from worldmodels.rundir import RunDir, run_holding
from worldmodels.scores import blocks, policy_scores, protocol, stats, summary_line

REPLAY = "replay.mp4"


def model_card(cfg: Config, results: dict | None, model_ref: str, replay_src: str | None) -> str:
    """README.md of the Hub repository: metadata, replay, scores, protocol, usage, files."""
    from huggingface_hub import EvalResult, ModelCardData

    c = cfg.controller
    data = ModelCardData(library_name="pytorch", tags=["reinforcement-learning", "deep-reinforcement-learning", cfg.env.id,
                                                       "world-models", "cma-es", "atari"])
    if results:
        data.model_name = "World Models"
        # one result per protocol: the first (the headline) under the Hub's usual name
        data.eval_results = [EvalResult(task_type="reinforcement-learning", task_name="reinforcement-learning",
                                        dataset_type=cfg.env.id, dataset_name=cfg.env.id, metric_type="mean_reward",
                                        metric_name="mean_reward" if k == 0 else f"mean_reward ({name})",
                                        metric_value=f"{block['mean']:.2f} +/- {block['std']:.2f}")
                             for k, (name, block) in enumerate(blocks(results).items())]
    lines = ["---", data.to_yaml(), "---", "", f"# World Models on {cfg.env.id}", ""]
    if replay_src:
        lines += [f'<video controls autoplay loop muted src="{replay_src}" width="320"></video>', ""]
    lines += ["V (a convolutional VAE) compresses each frame to z, M (an MDN-RNN) carries a memory h of the game in "
              "latent space, and C (a linear map from [z, h] to the action) was found by CMA-ES, after Ha & Schmidhuber "
              f"(2018). V: z={cfg.vae.z_size}, {cfg.vae.channels} to {8 * cfg.vae.channels} channels"
              f"{', encoding frames in int8' if cfg.vae.precision == 'int8' else ''}; "
              f"M: LSTM {cfg.mdnrnn.hidden} with {cfg.mdnrnn.gaussians} Gaussians per latent dimension; "
              f"C: trained in the {c.mode} game for {c.generations} generations (population {c.popsize}, "
              f"{c.rollouts} rollouts each).", ""]
    if results:
        lines += ["## Evaluation", "", summary_line(results), "", protocol(cfg, results) + ".", "",
                  "| protocol | policy | mean | std | min | max | distinct scores |", "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += ["| {} | {} | {mean:.1f} | {std:.1f} | {min:g} | {max:g} | {distinct} |".format(proto, name, **stats(s))
                  for proto, block in blocks(results).items() for name, s in policy_scores(block).items()]
        lines += ["", f"Published scores for reference ({PUBLISHED_SOURCE}): " + "; ".join(f"{n} {v:,}" for n, v in PUBLISHED.items()) + ".", ""]
    lines += ["## Usage", "", "With the `worldmodels` project installed (`make setup` in its checkout), play the "
              "evaluation's first episodes, on the same seeds, and record the first one:", "", "```bash",
              f"python -m worldmodels play --model {model_ref} --episodes 3 --video replay.mp4", "```", "",
              "The scores it prints are the first protocol's scores in `results.json`. Add `--sticky` to play "
              "under the sticky-actions protocol instead. From Python:", "", "```python", "from worldmodels.agent import Agent, play", "",
              f'agent = Agent.load("{model_ref}")', "print(play(agent, episodes=3))", "```", "",
              "## Files", "", "- `models/{vae,mdnrnn,controller}.pt`: the weights (`torch.load(path, weights_only=True)`), "
              "each with a `.json` marker holding its size and sha256", "- `config.yaml`: the exact configuration",
              "- `results.json`: every evaluation episode's seed and score, for every policy",
              f"- `{REPLAY}`: the controller playing evaluation episode 0", "- `report/`: the run's report (plots, "
              "reconstructions, dreams)", ""]
    return "\n".join(lines)


def write_folder(cfg: Config, run: RunDir, folder: Path, repo_id: str | None = None) -> Path:
    """Lay out what push uploads: the agent, results, replay, report and the model card."""
    from worldmodels import agent

    agent.write_folder(cfg, run, folder)
    results = run.results()
    if results:
        (folder / "results.json").write_text(json.dumps(results, indent=1))
    replay = run.videos / "controller-episode-0.mp4"
    if not replay.is_file():  # evaluate recorded no video (evaluate.videos=0): record one now
        from worldmodels.config import protocol_env
        from worldmodels.evaluate import eval_job
        from worldmodels.video import record_episode

        loaded = agent.Agent.load(folder)
        record_episode(protocol_env(cfg, cfg.evaluate.protocols[0]), loaded.policy(1), eval_job(cfg, 0), folder / REPLAY)
    else:
        shutil.copy(replay, folder / REPLAY)
    if run.report_dir.is_dir():
        shutil.copytree(run.report_dir, folder / "report", dirs_exist_ok=True)
    src = f"https://huggingface.co/{repo_id}/resolve/main/{REPLAY}" if repo_id else REPLAY
    (folder / "README.md").write_text(model_card(cfg, results, repo_id or str(folder.resolve()), src))
    return folder


def push(cfg: Config, run_dir: str | Path, repo_id: str | None, dry_run: Path | None) -> str:
    """Upload the run to `repo_id` (token from HF_TOKEN), or with dry_run write the folder there."""
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise DataError(f"nothing to push: {run.path} is not a run directory (no {run.config_file.name})")
    if dry_run is not None:
        if (other := run_holding(dry_run)) is not None:
            raise ConfigError(f"--dry-run {dry_run} lies in the run directory {other}, whose files it could replace: "
                              "choose another folder")
        return str(write_folder(cfg, run, Path(dry_run), repo_id))
    if not repo_id:
        raise ConfigError("push needs --repo-id (or --dry-run DIR)")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(cfg, run, Path(tmp), repo_id)
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload World Models run")
    return str(commit)
