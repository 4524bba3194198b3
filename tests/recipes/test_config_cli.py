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
