"""Tracking and sharing a finished run: wandb's offline runs read back with wandb's own reader, the
Hub folder and its model card read back with huggingface_hub, `play` reproducing the evaluation from
that folder, and the report rendered in a real browser (headless Chromium)."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMOKE, cli_env, run_cli
from worldmodels.stages import STAGES


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A smoke run through report, tracked in wandb (offline)."""
    run = tmp_path_factory.mktemp("sharing") / "run"
    for stage in STAGES:
        run_cli(stage, "--config", SMOKE, "--run-dir", run, "logging.wandb=true")
    return run


@pytest.fixture(scope="module")
def pushed(finished, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "agent"
    run_cli("push", "--run-dir", finished, "--dry-run", folder)
    return folder


def wandb_records(run_file: Path) -> list[dict]:
    """Every record of an offline run's .wandb log, as wandb's own reader (`wandb leet inspect`) prints it."""
    proc = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", str(run_file), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), f"wandb leet inspect failed: {proc.stderr[-2000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_wandb_runs_hold_each_stages_pictures_the_gameplay_video_and_the_score_table(finished):
    from worldmodels.rundir import RunDir

    runs = {}
    for folder in sorted((finished / "wandb" / "wandb").glob("offline-run-*")):
        records = wandb_records(next(folder.glob("*.wandb")))
        run = next(r["run"] for r in records if r["type"] == "run")
        media = {key.rsplit(".", 1)[0]: value for r in records if r["type"] == "history"
                 for key, value in r["history"]["item"].items() if key.endswith("._type")}
        runs[run["job_type"]] = {"run": run, "media": media, "folder": folder}
    assert set(runs) == set(STAGES) - {"report"}  # one wandb run per stage, job_type the stage
    group = RunDir(finished).group_name()
    for stage, found in runs.items():
        assert found["run"]["run_group"] == group and found["run"]["display_name"] == stage
        assert found["run"]["config"]["update"]["seed"] == 7  # the resolved config
    assert runs["train-vae"]["media"] == {"train-vae/vae-reconstructions": "image-file", "train-vae/train-vae-loss": "image-file"}
    assert runs["train-mdnrnn"]["media"] == {"train-mdnrnn/mdnrnn-dreams": "image-file", "train-mdnrnn/train-mdnrnn-loss": "image-file"}
    assert runs["train-controller"]["media"] == {"train-controller/fitness": "image-file"}
    assert runs["evaluate"]["media"] == {"evaluate/controller-episode-0": "video-file", "evaluate/scores": "image-file",
                                         "evaluate/episodes": "table-file"}
    folder = runs["evaluate"]["folder"]
    assert next((folder / "files" / "media" / "videos").rglob("*.mp4")).read_bytes()[4:8] == b"ftyp"
    table = json.loads(next((folder / "files" / "media" / "table").rglob("*.table.json")).read_text())
    assert table["columns"] == ["protocol", "policy", "episode", "seed", "score"]
    results = json.loads((finished / "eval" / "results.json").read_text())
    rows = {(protocol, policy, k): (seed, score) for protocol, policy, k, seed, score in table["data"]}
    assert len(rows) == 2 * 4 * results["episodes"]  # v4 and sticky, four policies
    for protocol, block in results["protocols"].items():
        assert [rows[(protocol, "controller", k)] for k in range(4)] == list(zip(results["seeds"], block["scores"]))
        assert [rows[(protocol, "random", k)][1] for k in range(4)] == block["random"]["scores"]


def test_the_hub_card_carries_model_index_metadata_the_replay_and_usage_that_works_when_copied(finished, pushed, tmp_path):
    from huggingface_hub import ModelCard

    results = json.loads((finished / "eval" / "results.json").read_text())
    card = ModelCard.load(pushed / "README.md")
    result, sticky = card.data.eval_results  # the headline (v4) under the Hub's usual metric name, then sticky
    assert (result.task_type, result.dataset_type, result.dataset_name, result.metric_type, result.metric_name) == (
        "reinforcement-learning", "SpaceInvadersNoFrameskip-v4", "SpaceInvadersNoFrameskip-v4", "mean_reward", "mean_reward")
    assert result.metric_value == f"{results['mean']:.2f} +/- {results['std']:.2f}"
    block = results["protocols"]["sticky"]
    assert (sticky.metric_name, sticky.metric_value) == ("mean_reward (sticky)", f"{block['mean']:.2f} +/- {block['std']:.2f}")
    assert "reinforcement-learning" in card.data.tags and "SpaceInvadersNoFrameskip-v4" in card.data.tags
    assert 'src="replay.mp4"' in card.text and (pushed / "replay.mp4").read_bytes()[4:8] == b"ftyp"
    assert "no sticky actions" in card.text and str(results["episodes"]) in card.text
    assert {p.name for p in (pushed / "models").iterdir()} == {f"{m}.{ext}" for m in ("vae", "mdnrnn", "controller") for ext in ("pt", "json")}
    for model in (pushed / "models").glob("*.pt"):  # weights only: nothing to resume training with
        assert "optimizer" not in torch.load(model, weights_only=True)
    # the usage section, copied as a user would: its shell command, then its Python
    shell = re.search(r"```bash\n(.*?)\n```", card.text, re.S).group(1)
    assert shell.startswith("python -m worldmodels play")
    proc = subprocess.run(shell.replace("python", sys.executable, 1), shell=True, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    played = [float(x) for x in re.findall(r"^episode \d+ \(seed \d+\): (\S+)$", proc.stdout, re.M)]
    assert played == results["scores"][:3] and (tmp_path / "replay.mp4").is_file()
    code = re.search(r"```python\n(.*?)\n```", card.text, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=cli_env())
    assert proc.returncode == 0 and proc.stdout.strip() == str(results["scores"][:3]), proc.stderr


def test_play_from_the_pushed_folder_reproduces_the_evaluation_on_the_same_seeds(finished, pushed, tmp_path):
    from worldmodels.agent import Agent

    results = json.loads((finished / "eval" / "results.json").read_text())
    proc = run_cli("play", "--model", pushed, "--episodes", results["episodes"], "--video", tmp_path / "out.mp4")
    printed = {int(k): (int(seed), float(score)) for k, seed, score in
               re.findall(r"^episode (\d+) \(seed (\d+)\): (\S+)$", proc.stdout, re.M)}
    assert [printed[k] for k in range(4)] == list(zip(results["seeds"], results["scores"]))
    assert (tmp_path / "out.mp4").read_bytes()[4:8] == b"ftyp"
    # the folder's agent is the run's agent, parameter for parameter
    from_folder, from_run = Agent.load(pushed), Agent.load(finished)
    np.testing.assert_array_equal(from_folder.solution, from_run.solution)
    for a, b in ((from_folder.vae, from_run.vae), (from_folder.mdnrnn, from_run.mdnrnn)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    sticky = run_cli("play", "--model", finished, "--episodes", 2, "--sticky")
    played = [float(x) for x in re.findall(r"^episode \d+ \(seed \d+\): (\S+)$", sticky.stdout, re.M)]
    assert played == results["protocols"]["sticky"]["scores"][:2]


@pytest.mark.parametrize("model, message", [("no/such-agent-offline", "cannot download the agent"),
                                            ("/nonexistent/folder", "no agent at /nonexistent/folder")])
def test_play_refuses_what_is_not_an_agent_in_one_line(model, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = run_cli("play", "--model", model, check=False)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_play_refuses_an_unfinished_run(tmp_path):
    run_cli("collect", "--config", SMOKE, "--run-dir", tmp_path / "run", "collect.episodes=2")
    proc = run_cli("play", "--model", tmp_path / "run", check=False)
    assert proc.returncode == 2 and "train-vae is not finished" in proc.stderr, proc.stderr


# --- the report, in a real browser --------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven through chromedriver (Debian's chromium and chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the report test needs chromium and chromedriver: `make system-packages` installs them (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


MEDIA_STATE = """return {
  images: Array.from(document.images).map(i => ({src: i.src, complete: i.complete, width: i.naturalWidth})),
  videos: Array.from(document.querySelectorAll('video')).map(v => ({src: v.currentSrc, ready: v.readyState,
          error: v.error && v.error.code, width: v.videoWidth, duration: v.duration}))};"""


def test_the_report_renders_in_a_browser_with_every_picture_and_video_loaded(finished, browser):
    page = finished / "report" / "index.html"
    browser.set_window_size(1280, 900)
    browser.get(page.as_uri())
    deadline = time.monotonic() + 30
    while True:  # media load asynchronously: wait until every element has loaded or failed
        state = browser.execute_script(MEDIA_STATE)
        settled = all(i["complete"] for i in state["images"]) and all(v["ready"] >= 1 or v["error"] for v in state["videos"])
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    figures = [name for stage in STAGES.values() for name, _ in stage.figures]
    assert sorted(Path(i["src"]).name for i in state["images"]) == sorted(figures)
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    assert len(state["videos"]) == 1 and all(v["error"] is None and v["width"] == 160 and v["duration"] > 0
                                             for v in state["videos"]), state["videos"]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    text = browser.find_element("tag name", "body").text
    assert "1,668.7" in text and "1,976" in text and "best policy that learns nothing" in text
    rows = browser.find_elements("xpath", "//h2[text()='Stages']/following-sibling::table[1]//tr")
    assert [r.find_elements("tag name", "td")[0].text for r in rows[1:]] == [s for s in STAGES if s != "report"]
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, height)
    shot = finished / "report" / "screenshot.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
