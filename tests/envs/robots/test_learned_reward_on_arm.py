"""``--robot.reward_classifier``: a classifier file from ``train_reward_classifier.py`` judges the
real arm's success from its cameras (franky-sim here, through ``make_arm_env`` as the recipes build
the arm); a classifier that does not fit the env is refused before anything connects."""
import pytest
import torch

from torchrl_serl.modules.classifier import make_pixel_classifier
from torchrl_serl.training.config import EnvConfig, RobotConfig
from torchrl_serl.training.env_factory import make_arm_env

pytestmark = pytest.mark.robots


def saved_classifier(path, image_size: int = 32, logit: float = 50.0):
    """A pixel classifier file whose verdict is ``logit`` whatever it sees."""
    classifier = make_pixel_classifier(("front", "wrist"), image_size, trunk="small", bottleneck_dim=8, hidden_dims=(8,))
    with torch.no_grad():
        classifier.head[-1].weight.zero_()
        classifier.head[-1].bias.fill_(logit)
    classifier.save(path)
    return path


def robot(address: str, classifier) -> RobotConfig:
    return RobotConfig(real=True, address=address, camera="test_pattern", realtime=False,
                       reward_classifier=str(classifier))


@pytest.mark.parametrize("env_cfg, match", [
    (EnvConfig(pixels=False, image_size=32), "needs --env.pixels true"),
    (EnvConfig(pixels=True, image_size=64), "reads \\['front', 'wrist'\\] at 32x32"),
])
def test_a_classifier_that_does_not_fit_is_refused_before_connecting(tmp_path, env_cfg, match):
    with pytest.raises(ValueError, match=match):  # an address nobody answers: refused before any connection
        make_arm_env(robot("10.255.255.1", saved_classifier(tmp_path / "clf.pt")), env_cfg, seed=0)


def test_the_learned_classifier_decides_the_arms_reward():
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from franky_sim_server import start_franky_sim, stop_franky_sim

    host, proc = start_franky_sim()
    try:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            env = make_arm_env(robot(host, saved_classifier(Path(tmp) / "clf.pt")),
                               EnvConfig(pixels=True, image_size=32), seed=0)
        try:
            td = env.step(env.reset().set("action", torch.zeros(4)))["next"]
            # the classifier says success: SERL's real envs reward it and end the episode
            assert float(td["reward"]) == 1.0 and bool(td["success"]) and bool(td["terminated"])
        finally:
            env.close()
    finally:
        stop_franky_sim(proc)
