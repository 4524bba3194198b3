import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import TransformedEnv, check_env_specs

from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.transforms.learned_reward import LearnedReward
from torchrl_serl.modules.classifier import SuccessClassifier
from torchrl_serl.modules.encoders import MultiCameraEncoder, SmallConvEncoder

IMAGE = 32


def pixel_classifier():
    enc = MultiCameraEncoder(
        SmallConvEncoder(features=(4, 8), kernel_sizes=(3, 3), strides=(2, 2)),
        camera_keys=("front",),
        image_size=IMAGE,
        bottleneck_dim=8,
        proprio_key=None,
    )
    return SuccessClassifier(enc, hidden_dims=(8,))


def pixel_env(**transform_kwargs):
    env = PandaPickCubeEnv(pixels=True, image_size=IMAGE, camera_keys=("front",), seed=0, max_episode_steps=6)
    clf = pixel_classifier()
    return TransformedEnv(env, LearnedReward(clf, **transform_kwargs)), clf


def logits_of(clf, td):
    with torch.no_grad():
        return clf.eval()(td.select(*clf.in_keys).clone())["logit"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mode": "prob", "combine": "add"},
        {"mode": "log_prob", "terminate_on_success": True},
        {"success_key": "classifier_success"},
    ],
)
def test_env_specs_pass(kwargs):
    env, _ = pixel_env(**kwargs)
    check_env_specs(env, seed=0)
    env.close()


def test_replace_mode_reward_is_the_classifier_on_the_next_images():
    env, clf = pixel_env(mode="prob")
    td = env.rollout(4)
    logit = logits_of(clf, td["next"])
    torch.testing.assert_close(td["next", "reward"], torch.sigmoid(logit))
    assert torch.equal(td["next", "success"], logit >= 0)
    env.close()


def test_add_mode_keeps_the_env_reward_and_a_separate_success_flag():
    def policy(td):
        return td.set("action", torch.tensor([0.5, 0.2, -0.5, 0.3]))

    def make():
        return PandaPickCubeEnv(pixels=True, image_size=IMAGE, camera_keys=("front",), seed=0)

    base = make()
    reference = base.rollout(3, policy)
    clf = pixel_classifier()
    env = TransformedEnv(make(), LearnedReward(clf, "log_prob", combine="add", success_key="classifier_success"))
    td = env.rollout(3, policy)
    logit = logits_of(clf, td["next"])
    torch.testing.assert_close(td["next", "reward"], reference["next", "reward"] + nn.functional.logsigmoid(logit))
    assert torch.equal(td["next", "success"], reference["next", "success"])  # simulator's ground truth kept
    assert torch.equal(td["next", "classifier_success"], logit >= 0)
    env.close()
    base.close()


def test_terminate_on_success_ends_the_episode():
    env, clf = pixel_env(mode="threshold", terminate_on_success=True)
    with torch.no_grad():
        clf.head[-1].bias.fill_(50.0)  # the classifier calls everything a success
    td = env.rollout(5)
    assert td.shape == (1,)
    assert td["next", "terminated"].all() and td["next", "done"].all() and td["next", "success"].all()
    assert td["next", "reward"].item() == 1.0
    env.close()


def test_relabels_sampled_transitions_from_a_collector_buffer():
    env = PandaPickCubeEnv(pixels=True, image_size=IMAGE, camera_keys=("front",), seed=0, max_episode_steps=6)
    collector = Collector(env, None, frames_per_batch=8, total_frames=8)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), batch_size=8)
    for data in collector:
        rb.extend(data.reshape(-1))
    collector.shutdown()
    env_reward = rb[:]["next", "reward"].clone()

    clf = pixel_classifier()
    rb.append_transform(LearnedReward(clf, "threshold", threshold=0.5))
    batch = rb.sample()
    logit = logits_of(clf, batch["next"])
    assert torch.equal(batch["next", "reward"], (logit >= 0).float())
    # The stored data is untouched: only samples are relabelled, with the classifier of the moment.
    torch.testing.assert_close(rb.storage[:]["next", "reward"], env_reward)


def test_relabels_a_flat_batch_at_its_root():
    clf = SuccessClassifier(in_features=10, hidden_dims=(8,))
    batch = TensorDict(observation=torch.randn(5, 10), reward=torch.zeros(5, 1), batch_size=[5])
    out = LearnedReward(clf, "prob")(batch)
    torch.testing.assert_close(out["reward"], torch.sigmoid(logits_of(clf, batch)))


def test_state_env_specs_and_bad_settings():
    clf = SuccessClassifier(in_features=10, hidden_dims=(8,))
    env = TransformedEnv(PandaPickCubeEnv(seed=0), LearnedReward(clf, "prob"))
    check_env_specs(env, seed=0)
    env.close()
    with pytest.raises(ValueError, match="combine"):
        LearnedReward(clf, combine="multiply")
    with pytest.raises(ValueError, match="mode"):
        LearnedReward(clf, mode="logit")
    with pytest.raises(KeyError, match="reward"):
        LearnedReward(clf, combine="add")(TensorDict(observation=torch.randn(2, 10), batch_size=[2]))
