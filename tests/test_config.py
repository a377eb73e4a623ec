
import pytest

from conftest import ROOT, SMOKE, run_cli
from worldmodels import config
from worldmodels.errors import ConfigError


def test_every_preset_resolves_and_layers_on_the_defaults():
    for name in ("smoke", "demo", "spaceinvaders"):
        cfg = config.load(ROOT / "configs" / f"{name}.yaml")
        assert cfg.env.id == "SpaceInvadersNoFrameskip-v4"
    smoke = config.load(SMOKE)
    assert smoke.collect.episodes == 6
    assert smoke.collect.action_repeat_max == config.CollectConfig().action_repeat_max  # untouched default


def test_overrides_parse_yaml_values_and_coerce_ints_to_floats():
    cfg = config.load(SMOKE, ["collect.episodes=9", "logging.every_s=2", "env.id=PongNoFrameskip-v4", "logging.wandb=true"])
    assert cfg.collect.episodes == 9
    assert cfg.logging.every_s == 2.0 and isinstance(cfg.logging.every_s, float)
    assert cfg.env.id == "PongNoFrameskip-v4"
    assert cfg.logging.wandb is True


@pytest.mark.parametrize("override, key", [
    ("collect.epsiodes=3", "collect.epsiodes"),
    ("colect.episodes=3", "colect"),
    ("collect.episodes=three", "collect.episodes"),
    ("collect.episodes=2.5", "collect.episodes"),
    ("collect.episodes=true", "collect.episodes"),
    ("logging.wandb=3", "logging.wandb"),
    ("collect.episodes=-4", "collect.episodes"),
    ("env.size=1000", "env.size"),
    ("collect=3", "collect"),
    ("controller.sigma0=.inf", "controller.sigma0"),  # non-finite numbers, which YAML reads as floats
    ("vae.lr=.nan", "vae.lr"),
    ("mdnrnn.tau=-.inf", "mdnrnn.tau"),
    ("vae.lr=inf", "vae.lr"),  # and as the strings a float is also read from ("1e-4")
    ("controller.sigma0=nan", "controller.sigma0"),
    ("mdnrnn.reward_scale=0", "mdnrnn.reward_scale"),  # zero where a scale divides
    ("env.repeat_action_probability=1", "env.repeat_action_probability"),
    ("controller.inputs=zc", "controller.inputs"),  # the ablations: what C sees, an untrained M, the protocols
    ("mdnrnn.steps=-1", "mdnrnn.steps"),
    ("evaluate.protocols=[v4, v4]", "evaluate.protocols"),
    ("evaluate.protocols=[v5]", "evaluate.protocols"),
    ("evaluate.protocols=[]", "evaluate.protocols"),
    ("controller.select_protocol=v5", "controller.select_protocol"),
    ("controller.select_protocol=[v4, v5]", "controller.select_protocol"),
    ("controller.select_protocol=[sticky, sticky]", "controller.select_protocol"),
    ("controller.select_protocol=[]", "controller.select_protocol"),
    ("controller.protocol=v5", "controller.protocol"),
    ("vae.channels=0", "vae.channels"),
    ("vae.precision=float16", "vae.precision"),
])
def test_bad_keys_and_values_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        config.load(SMOKE, [override])


def test_options_of_the_real_game_are_refused_with_a_dream():
    for option in ("controller.protocol=sticky", "controller.select=2"):
        with pytest.raises(ConfigError, match=f"'{option.split('=')[0]}'.*controller.mode=dream"):
            config.load(SMOKE, ["controller.mode=dream", option])


def test_malformed_override_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        config.load(SMOKE, ["collect.episodes"])


def test_preset_extends_another_and_detects_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ncollect:\n  episodes: 5\n  chunk_steps: 8\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\ncollect:\n  episodes: 11\n")
    cfg = config.load(tmp_path / "top.yaml")
    assert (cfg.seed, cfg.collect.episodes, cfg.collect.chunk_steps) == (3, 11, 8)
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        config.load(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")


def test_an_empty_config_file_is_an_error_that_names_the_presets(tmp_path):
    # it would silently mean the paper-scale defaults: 10,000 episodes and days of training
    for text in ("", "# nothing yet\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match="is empty: use a preset .*configs/demo.yaml"):
            config.load(tmp_path / "empty.yaml")


def test_configs_are_frozen(smoke_cfg):
    with pytest.raises(Exception):
        smoke_cfg.seed = 3


def test_cli_reports_a_config_error_in_one_line_and_exits_2(tmp_path):
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", tmp_path / "r", "collect.episodez=2", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "collect.episodez" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cli_help_lists_the_stages():
    proc = run_cli("--help")
    assert "collect" in proc.stdout and "status" in proc.stdout


def test_readme_documents_every_config_key_with_its_default():
    readme = (ROOT / "README.md").read_text()

    def keys(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, default in keys(config.to_dict(config.Config())):
        shown = str(default).lower() if isinstance(default, bool) else ("null" if default is None else (default if default != "" else '""'))
        assert f"| `{key}` | {shown} |" in readme, f"README's configuration reference lacks {key} (default {default})"
