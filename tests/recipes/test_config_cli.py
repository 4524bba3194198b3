"""Typed configs overridable from the command line."""

from dataclasses import dataclass, field

import pytest

from torchrl_serl.training.config import EnvConfig, RunConfig, SACConfig, build_parser, parse_config


@dataclass
class _Config(RunConfig):
    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)


def test_defaults_are_serl_learner_defaults():
    cfg = parse_config(_Config, [])
    assert (cfg.sac.num_critics, cfg.sac.critic_subsample, cfg.sac.hidden) == (10, 2, (256, 256))
    assert (cfg.sac.tau, cfg.sac.alpha_init, cfg.sac.batch_size, cfg.sac.utd_ratio) == (0.005, 0.01, 256, 8)
    assert cfg.sac.discount == 0.99 and cfg.sac.backup_entropy is False and cfg.sac.target_entropy is None


def test_overrides_nested_typed_and_flags():
    cfg = parse_config(
        _Config,
        ["--total_steps", "50", "--sac.hidden", "64,32", "--env.pixels", "true", "--resume",
         "--sac.target_entropy", "-1.5", "--compile", "false"],
    )
    assert cfg.total_steps == 50 and cfg.sac.hidden == (64, 32) and cfg.env.pixels is True
    assert cfg.resume is True and cfg.compile is False and cfg.sac.target_entropy == -1.5
    assert parse_config(_Config, ["--sac.target_entropy", "none"]).sac.target_entropy is None


def test_help_lists_fields_with_defaults():
    text = build_parser(_Config).format_help()
    assert "--sac.utd_ratio" in text and "(default: 8)" in text
    assert "--env.reward_type" in text and "Environment steps to collect" in text


@pytest.mark.parametrize("argv", [["--total_steps", "many"], ["--env.pixels", "maybe"], ["--nope", "1"]])
def test_bad_values_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        parse_config(_Config, argv)
    err = capsys.readouterr().err
    assert argv[0] in err or "unrecognized" in err


TRAINING_RECIPES = ["sac_state_sim", "drq", "vice", "bc", "train_reward_classifier", "async_sac"]


@pytest.mark.parametrize("name", TRAINING_RECIPES)
def test_every_training_recipe_config_is_a_run_config(name):
    """Seed, budget, logging, evaluation, checkpoints and resume read the same in every training recipe."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    assert issubclass(module.Config, RunConfig)
    text = build_parser(module.Config).format_help()
    assert "--resume" in text and "--checkpoint_every" in text and "--total_steps" in text
