import json
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch

from conftest import SMOKE, run_cli, start_cli, assert_same_store, tree_digest, wait_for
from worldmodels.checkpoint import Checkpointer, load_file, save_file
from worldmodels.dataset import EpisodeStore
from worldmodels.errors import DataError
from worldmodels.rundir import RunDir
from worldmodels.stages import chain

STEPS = {"train-vae": ["vae.steps=30"], "train-mdnrnn": ["mdnrnn.steps=40"]}
COMMON = ["train.log_every_steps=1", "train.checkpoint_every_steps=7"]
# settings that belong to no stage's identity: a run may resume with other values and ends the same
RESUME_WITH = {"train-vae": ["vae.loader_workers=2"], "train-mdnrnn": ["mdnrnn.loader_workers=2"]}
OPERATIONAL = ["train.device=cpu", "train.checkpoint_every_steps=3", "train.keep_checkpoints=2", "logging.wandb=true"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A smoke run with rollouts, a finished VAE and latents (what train-mdnrnn needs)."""
    run = tmp_path_factory.mktemp("upstream") / "run"
    args = ["--config", SMOKE, "--run-dir", run, *STEPS["train-vae"], *STEPS["train-mdnrnn"], *COMMON]
    for stage in chain("encode"):
        run_cli(stage, *args)
    return run, args


def fresh_copy(upstream, tmp_path, name, keep=("config.yaml", "data", "checkpoints/vae")):
    run, args = upstream
    dest = tmp_path / name
    dest.mkdir()
    for item in keep:
        src = run / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        elif src.exists():
            shutil.copy(src, dest / item)
    return dest, [a if a != run else dest for a in args]


def final_state(run: Path, stage: str) -> dict:
    directory = run / "checkpoints" / stage.removeprefix("train-")
    return load_file(directory / f"step-{Checkpointer(directory, every_steps=1, every_s=1, keep=1).steps()[-1]:09d}.pt")


def assert_bitwise_equal(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def wait_for_step(run: Path, stage: str, step: int, proc, timeout=120):
    path = run / "logs" / f"{stage}.jsonl"
    wait_for(lambda: path.exists() and any(json.loads(l)["step"] >= step for l in path.read_text().splitlines() if l.strip()),
             timeout, f"{stage} step {step}", proc=proc, every=0.02)


@pytest.mark.parametrize("stage, sig", [("train-vae", signal.SIGTERM), ("train-mdnrnn", signal.SIGINT)])  # SIGINT: Ctrl-C
def test_sigterm_at_a_random_step_then_rerun_ends_bitwise_identical(upstream, tmp_path, stage, sig):
    keep = ("config.yaml", "data") if stage == "train-vae" else ("config.yaml", "data", "checkpoints/vae")
    whole, whole_args = fresh_copy(upstream, tmp_path, "whole", keep)
    cut, cut_args = fresh_copy(upstream, tmp_path, "cut", keep)
    run_cli(stage, *whole_args)
    total = int(STEPS[stage][0].split("=")[1])
    at = random.randrange(2, total - 8)
    proc = start_cli(stage, *cut_args)
    wait_for_step(cut, stage, at, proc)
    proc.send_signal(sig)
    assert proc.wait(60) == 75, proc.stderr.read()
    stopped = final_state(cut, stage)["step"]
    assert at <= stopped < total, f"interrupted at step {stopped}, asked at {at}"
    status = json.loads(run_cli("status", cut, "--json").stdout)["stages"][stage]
    assert status["state"] == "partial" and status["step"] == stopped
    rerun = run_cli(stage, *cut_args, *OPERATIONAL, *RESUME_WITH[stage])
    assert f"resuming from step {stopped}" in rerun.stderr
    a, b = final_state(whole, stage), final_state(cut, stage)
    assert a["step"] == b["step"] == total
    assert_bitwise_equal(a["model"], b["model"], f"model (interrupted at step {stopped})")
    assert_bitwise_equal(a["optimizer"], b["optimizer"], "optimizer")
    assert (whole / "logs" / f"{stage}.jsonl").read_text() == (cut / "logs" / f"{stage}.jsonl").read_text()
    last = f"step-{total:09d}.pt"  # the file itself, though the resumed run read its strings back from another
    assert RunDir(whole).checkpoints(stage).joinpath(last).read_bytes() == RunDir(cut).checkpoints(stage).joinpath(last).read_bytes()


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path, every_steps=1, every_s=1e9, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, {"step": step, "w": torch.full((3,), float(step))})
    assert ckpt.steps() == [2, 3]  # keep-last-K
    newest = tmp_path / "step-000000003.pt"
    newest.write_bytes(newest.read_bytes()[:-10])  # torn write
    state = ckpt.load_latest()
    assert state["step"] == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert "falling back" in caplog.text
    (tmp_path / "step-000000003.pt").unlink()
    (tmp_path / "step-000000003.json").unlink()
    (tmp_path / "step-000000004.pt").write_bytes(b"no marker: never counted")
    assert ckpt.load_latest()["step"] == 2


def test_checkpoints_load_without_unpickling_code(tmp_path):

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    ckpt = Checkpointer(tmp_path, every_steps=1, every_s=1, keep=3)
    ckpt.save(1, {"step": 1})
    torch.save({"step": 2, "payload": Evil()}, tmp_path / "evil.pt")
    import hashlib

    data = (tmp_path / "evil.pt").read_bytes()
    (tmp_path / "step-000000002.pt").write_bytes(data)
    (tmp_path / "step-000000002.json").write_text(json.dumps({"step": 2, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    assert ckpt.load_latest()["step"] == 1  # the pickle with code was refused, the good one used


def test_a_resumed_run_survives_a_corrupt_newest_checkpoint_and_still_ends_identical(upstream, tmp_path):
    whole, whole_args = fresh_copy(upstream, tmp_path, "whole", ("config.yaml", "data", "checkpoints/vae"))
    cut, cut_args = fresh_copy(upstream, tmp_path, "cut", ("config.yaml", "data", "checkpoints/vae"))
    run_cli("train-mdnrnn", *whole_args)
    run_cli("train-mdnrnn", *cut_args)
    directory = cut / "checkpoints" / "mdnrnn"
    (directory / "step-000000040.pt").write_bytes(b"\0" * 100)  # the final checkpoint is damaged
    rerun = run_cli("train-mdnrnn", *cut_args)
    assert "setting aside step-000000040.pt as corrupt" in rerun.stderr and "resuming from step 35" in rerun.stderr
    assert_bitwise_equal(final_state(whole, "train-mdnrnn")["model"], final_state(cut, "train-mdnrnn")["model"])


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(upstream, tmp_path):
    run, args = fresh_copy(upstream, tmp_path, "nan", ("data",))
    args = [a for a in args if not str(a).startswith("vae.")] + ["vae.lr=1e30", "vae.steps=30", "train.checkpoint_every_steps=1"]
    proc = run_cli("train-vae", *args, check=False)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: train-vae: loss is nan") and "last good checkpoint: step 1" in error
    state = final_state(run, "train-vae")
    assert state["step"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    status = json.loads(run_cli("status", run, "--json").stdout)["stages"]["train-vae"]
    assert status["state"] == "failed" and "loss is nan" in status["error"]


def test_encode_resumed_midway_equals_encode_in_one_go(upstream, tmp_path):
    one, one_args = fresh_copy(upstream, tmp_path, "one")
    parts, parts_args = fresh_copy(upstream, tmp_path, "parts")
    shutil.rmtree(one / "data" / "latents.zarr")
    shutil.rmtree(parts / "data" / "latents.zarr")
    run_cli("encode", *one_args)
    run_cli("encode", *parts_args, "--task", 1, "--num-tasks", 3)  # a third of the work, then stopped
    assert "(4 encoded now)" in run_cli("encode", *parts_args, "encode.batch_size=5").stdout  # another batch size
    assert_same_store(one / "data" / "latents.zarr", parts / "data" / "latents.zarr")


def test_stages_refuse_missing_or_unfinished_inputs(tmp_path):
    run = tmp_path / "run"
    for stage, message in [("train-vae", "collect is not finished"), ("encode", "train-vae is not finished"),
                           ("train-mdnrnn", "encode is not finished"), ("report", "evaluate is not finished")]:
        proc = run_cli(stage, "--config", SMOKE, "--run-dir", run, check=False)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not run.exists()  # a mistyped run directory is not made
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    proc = run_cli("encode", "--config", SMOKE, "--run-dir", run, check=False)
    assert proc.returncode == 2 and "train-vae is not finished" in proc.stderr


def test_a_vae_of_another_size_is_refused_by_encode_and_train_mdnrnn(upstream, tmp_path):
    run, args = upstream
    vae = sorted((run / "checkpoints" / "vae").glob("*.pt"))[-1]  # z_size 8 (smoke)
    other = tmp_path / "other"
    base = ["--config", SMOKE, "--run-dir", other, "vae.z_size=4", f"encode.vae={vae}"]
    shutil.copytree(run / "data", other / "data")
    shutil.rmtree(other / "data" / "latents.zarr")
    before = tree_digest(other)
    proc = run_cli("encode", *base, check=False)
    assert proc.returncode == 2 and "has z_size 8, the config says vae.z_size=4" in proc.stderr
    # what the refused command leaves is bookkeeping (the config, the stages' identities), never data
    assert {k: v for k, v in tree_digest(other).items() if k != "config.yaml" and not k.startswith("stages/")} == before
    shutil.copytree(run / "data" / "latents.zarr", other / "data" / "latents.zarr")
    proc = run_cli("train-mdnrnn", *base, check=False)
    assert proc.returncode == 2 and "latents of size 8, the config says vae.z_size=4" in proc.stderr
    narrower = tmp_path / "narrower"  # V's width, which its file records too
    shutil.copytree(run / "data" / "rollouts.zarr", narrower / "data" / "rollouts.zarr")
    proc = run_cli("encode", "--config", SMOKE, "--run-dir", narrower, "vae.channels=16", f"encode.vae={vae}", check=False)
    assert proc.returncode == 2 and "has channels 32, the config says vae.channels=16" in proc.stderr, proc.stderr


def test_v_is_calibrated_for_int8_when_trained_and_encodes_near_float32_in_it(upstream, tmp_path, caplog):
    from worldmodels import config
    from worldmodels.rundir import vae_from

    run, args = upstream
    final = sorted((run / "checkpoints" / "vae").glob("*.pt"))[-1]
    ranges = load_file(final)["int8_ranges"]
    assert len(ranges) == 4 and all(r > 0 for r in ranges)  # the largest outputs of V's 4 convolutions
    assert all("int8_ranges" not in load_file(path) for path in sorted((run / "checkpoints" / "vae").glob("*.pt"))[:-1])
    quantized, quantized_args = fresh_copy(upstream, tmp_path, "quantized")
    shutil.rmtree(quantized / "data" / "latents.zarr")
    run_cli("encode", *quantized_args, "vae.precision=int8")
    floats, ints = (EpisodeStore.open(r / "data" / "latents.zarr").read_episode(0, ["mu"])["mu"] for r in (run, quantized))
    # the smoke V, trained 30 steps, barely tells frames apart: its z is measured against their size
    error = float(((ints - floats) ** 2).mean() / (floats ** 2).mean()) ** 0.5
    assert 0 < error < 0.01, error
    # a V trained before vae.precision existed has no calibration: refused in one line
    old, other = tmp_path / "old.pt", tmp_path / "other"
    save_file(old, {k: v for k, v in load_file(final).items() if k != "int8_ranges"})
    shutil.copytree(run / "data" / "rollouts.zarr", other / "data" / "rollouts.zarr")
    proc = run_cli("encode", "--config", SMOKE, "--run-dir", other, "vae.precision=int8", f"encode.vae={old}", check=False)
    assert proc.returncode == 2 and "has no int8 calibration" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    # int8 names CPU kernels: on another device V stays in float32, and says so
    with caplog.at_level("WARNING"):
        elsewhere = vae_from(final, config.load(SMOKE, ["vae.precision=int8"]), "meta")
    weights = list(elsewhere.encoder.parameters())  # a quantized encoder keeps its weights packed, on the CPU
    assert weights and all(w.is_meta and w.dtype == torch.float32 for w in weights)
    assert "vae.precision=int8 applies on the CPU only" in caplog.text


def test_train_mdnrnn_without_v_is_refused_before_training(upstream, tmp_path):
    # M's report decodes its dreams with V: without V it used to train every step, then fail
    run, args = fresh_copy(upstream, tmp_path, "no-v", ("config.yaml", "data"))
    proc = run_cli("train-mdnrnn", *args, check=False)
    assert proc.returncode == 2 and "train-vae is not finished" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (run / "checkpoints" / "mdnrnn").exists()


def test_a_writer_sets_a_corrupt_checkpoint_aside_so_it_holds_no_keep_place_and_clears_torn_writes(tmp_path):
    ckpt = Checkpointer(tmp_path, every_steps=1, every_s=1e9, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, {"step": step})
    newest = tmp_path / "step-000000003.pt"
    newest.write_bytes(newest.read_bytes()[:-10])  # torn
    (tmp_path / ".step-000000004.pt.k2j3x.tmp").write_bytes(b"a write killed midway")
    assert ckpt.resume("train-vae")["step"] == 2
    assert ckpt.steps() == [2] and (tmp_path / "step-000000003.pt.corrupt").is_file()
    assert not list(tmp_path.glob(".*.tmp"))
    ckpt.save(4, {"step": 4})
    assert ckpt.steps() == [2, 4]  # two good checkpoints kept, none displaced by the corrupt one


def test_a_marker_whose_checkpoint_is_gone_refuses_a_silent_start_over_as_a_corrupt_one_does(tmp_path):
    ckpt = Checkpointer(tmp_path, every_steps=1, every_s=1e9, keep=2)
    ckpt.save(1, {"step": 1})
    (tmp_path / "step-000000001.pt").unlink()
    for _ in range(2):
        with pytest.raises(DataError, match=r"1 set aside as \*\.corrupt.*--restart"):
            ckpt.resume("train-vae")
    # trained again and found corrupt again, the same step is set aside beside the first copy
    ckpt.save(1, {"step": 1})
    (tmp_path / "step-000000001.pt").write_bytes(b"damaged")
    with pytest.raises(DataError, match=r"1 set aside as \*\.corrupt"):
        ckpt.resume("train-vae")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000001.json.1.corrupt", "step-000000001.json.corrupt", "step-000000001.pt.corrupt"]
    assert ckpt.lift_corrupt() == 3 and ckpt.resume("train-vae") is None


def test_when_no_checkpoint_verifies_every_rerun_stops_and_restart_starts_over(upstream, tmp_path):
    run, args = fresh_copy(upstream, tmp_path, "corrupt", ("config.yaml", "data"))
    run_cli("train-vae", *args)
    reference = final_state(run, "train-vae")
    directory = run / "checkpoints" / "vae"
    for path in directory.glob("step-*.pt"):  # a flipped byte in every checkpoint
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    for _ in range(2):  # never a silent start from step 0: neither when they are found corrupt, nor after
        proc = run_cli("train-vae", *args, check=False)
        assert proc.returncode == 2 and "3 set aside as *.corrupt" in proc.stderr and "--restart" in proc.stderr, proc.stderr
        assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [proc.stderr.splitlines()[-1]]
        assert not list(directory.glob("step-*.json"))
    # verify says why the stage refuses, and --repair lifts the refusal (in a copy: --restart below)
    repaired = tmp_path / "repaired"
    shutil.copytree(run, repaired)
    repaired_args = [repaired if a == run else a for a in args]
    proc = run_cli("verify", repaired, check=False)
    assert proc.returncode == 1 and "train-vae refuses to start over" in proc.stdout + proc.stderr
    proc = run_cli("verify", repaired, "--repair", check=False)
    assert "repaired: rerun train-vae" in proc.stdout + proc.stderr
    run_cli("train-vae", *repaired_args)
    assert_bitwise_equal(final_state(repaired, "train-vae")["model"], reference["model"])
    run_cli("train-vae", *args, "--restart")
    assert_bitwise_equal(final_state(run, "train-vae")["model"], reference["model"])
    (aside,) = run.joinpath("checkpoints").glob("vae.before-restart-*")
    assert len(list(aside.glob("*.corrupt"))) == 6  # kept, not deleted


def test_after_verify_repair_sets_every_checkpoint_aside_a_plain_rerun_trains_the_same_files_again(upstream, tmp_path):
    run, args = fresh_copy(upstream, tmp_path, "repair", ("config.yaml", "data"))
    run_cli("train-vae", *args)
    directory = run / "checkpoints" / "vae"
    made = {p.name: p.read_bytes() for p in directory.glob("step-*.pt")}
    for path in directory.glob("step-*.pt"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    # set aside by an earlier resume that went on from an older checkpoint: no refusal once repaired
    directory.joinpath("step-000000001.pt.corrupt").write_bytes(b"damaged long ago")
    proc = run_cli("verify", run, "--repair")  # the user asked for the rerun: it may start over
    assert "repaired: rerun train-vae" in proc.stdout + proc.stderr
    run_cli("train-vae", *args)
    assert max(made) in {p.name for p in directory.glob("step-*.pt")}
    assert directory.joinpath(max(made)).read_bytes() == made[max(made)]


def test_identical_runs_write_identical_checkpoint_files_and_encode_knows_v_by_its_parameters(upstream, tmp_path):
    first, first_args = fresh_copy(upstream, tmp_path, "first", ("config.yaml", "data"))
    second, second_args = fresh_copy(upstream, tmp_path, "second", ("config.yaml", "data"))
    run_cli("train-vae", *first_args, "vae.steps=8")
    run_cli("train-vae", *second_args, "vae.steps=8")
    # no unseeded random state nor a clock inside: the files themselves are equal, markers too
    assert tree_digest(first / "checkpoints") == tree_digest(second / "checkpoints")
    # the latents record V by its parameters: the same V in a file of other bytes (here without its
    # optimizer) still matches the latents encoded before; a V with one weight changed does not
    run, args = fresh_copy(upstream, tmp_path, "encoded")
    final = sorted((run / "checkpoints" / "vae").glob("step-*.pt"))[-1]
    state = load_file(final)
    save_file(final, {**state, "optimizer": {}}, {"step": state["step"]})
    proc = run_cli("encode", *args)
    assert "(0 encoded now)" in proc.stdout, proc.stderr
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[0] += 1
    save_file(final, state, {"step": state["step"]})
    before = tree_digest(run / "data")
    proc = run_cli("encode", *args, check=False)
    assert proc.returncode == 2 and "was encoded with another V" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert tree_digest(run / "data") == before


# ATEN_CPU_CAPABILITY=default stands in for another kind of CPU: ATen's scalar kernels round
# differently from its vector ones on every x86 CPU
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default"}


def test_a_training_resume_where_the_cpu_kernels_round_differently_is_said_and_one_on_the_same_is_not(upstream, tmp_path):
    run, args = fresh_copy(upstream, tmp_path, "run")
    run_cli("train-mdnrnn", *args)
    directory = run / "checkpoints" / "mdnrnn"
    made = json.loads((directory / "step-000000040.json").read_text())["kernels"]

    def resume_from_step_35(env=None):
        for part in ("pt", "json"):
            (directory / f"step-000000040.{part}").unlink()
        said = run_cli("train-mdnrnn", *args, env=env).stderr
        assert "resuming from step 35" in said
        return said, json.loads((directory / "step-000000040.json").read_text())["kernels"]

    said, other = resume_from_step_35(OTHER_KERNELS)
    assert other != made and f"step-000000035.pt was made where the CPU kernels round differently (kernels {made} " \
        f"there, {other} here" in said
    said, again = resume_from_step_35()
    assert again == made and "round differently" not in said


def test_a_data_stage_resumed_where_the_cpu_kernels_round_differently_says_so(upstream, tmp_path):
    run, args = fresh_copy(upstream, tmp_path, "run", ("config.yaml", "data", "checkpoints/vae", "state"))
    latents = EpisodeStore.open(run / "data" / "latents.zarr")
    made = json.loads((run / "state" / "encode.json").read_text())["kernels"]
    latents.uncommit(0)
    assert "round differently" not in run_cli("encode", *args).stderr
    latents.uncommit(0)
    said = run_cli("encode", *args, env=OTHER_KERNELS).stderr
    other = json.loads((run / "state" / "encode.json").read_text())["kernels"]
    assert other != made and f"encode: the {latents.num_episodes - 1} episodes already done were made where the CPU " \
        f"kernels round differently (kernels {made} there, {other} here" in said


def failing_backward(graph, example_inputs):
    """A torch.compile backend whose forward runs and whose backward fails, as inductor's did on V
    with torch 2.11 on CUDA."""
    class Fails(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            raise AssertionError("expected size 128==128, stride 25==1 at dim=1\nError in op: convolution_backward")

    return lambda *args: [Fails.apply(out) for out in graph(*args)]


@pytest.mark.parametrize("backend, failure", [
    ("aot_eager", None),  # compiles: V trains compiled
    (failing_backward, "AssertionError: expected size 128==128, stride 25==1 at dim=1"),
    ("inductor", "no-such-c++-compiler"),  # the compiler itself fails: given a C++ compiler that does not exist
])
def test_vae_compile_is_tried_once_and_where_the_compiler_fails_v_trains_uncompiled_with_one_warning(
        caplog, backend, failure):
    """vae.compile is tried once before training, forwards and backwards: where torch's compiler fails
    on V, V trains uncompiled instead of the stage ending at step 0. Either way the trial leaves no
    gradients behind."""
    import torch._inductor.config

    from worldmodels.config import Config, VAEConfig
    from worldmodels.train_vae import compiled
    from worldmodels.vae import ConvVAE, vae_loss

    model = ConvVAE(8)
    try:
        with torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
            forward = compiled(model, Config(vae=VAEConfig(z_size=8, batch_size=4, compile=True)), torch.device("cpu"),
                               backend)
        assert all(p.grad is None for p in model.parameters())
        warnings = [r.getMessage() for r in caplog.records if r.name == "worldmodels"]
        if failure is None:
            assert forward is not model and not warnings
        else:
            [warning] = warnings
            assert forward is model and warning.startswith("train-vae: vae.compile: torch.compile fails on V with "
                                                           "torch ") and warning.endswith("; training V uncompiled")
            assert failure in warning and "Error in op" not in warning
        x = torch.rand(4, 3, 64, 64)
        recon, mu, logvar = forward(x, torch.randn(4, 8))
        vae_loss(x, recon, mu, logvar, 0.5)[0].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        torch._dynamo.reset()
