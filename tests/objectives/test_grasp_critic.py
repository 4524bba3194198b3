import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_serl.modules import make_grasp_critic
from torchrl_serl.modules.sac_networks import grasp_action_to_index, grasp_index_to_action
from torchrl_serl.objectives import GraspCriticLoss

OBS, B = 5, 12


def _batch(terminated=False):
    g = torch.Generator().manual_seed(0)
    arm = torch.rand(B, 3, generator=g) * 2 - 1
    grip = torch.randint(-1, 2, (B, 1), generator=g).float()
    return TensorDict(
        observation=torch.randn(B, OBS, generator=g),
        action=torch.cat([arm, grip], -1),
        next=TensorDict(
            observation=torch.randn(B, OBS, generator=g),
            reward=torch.randn(B, 1, generator=g),
            grasp_penalty=0.02 * torch.randint(0, 2, (B, 1), generator=g).float(),
            done=torch.full((B, 1), terminated),
            terminated=torch.full((B, 1), terminated),
            batch_size=[B],
        ),
        batch_size=[B],
    )


def test_action_index_round_trip():
    cmd = torch.tensor([-1.0, -0.4, 0.0, 0.6, 1.0])
    torch.testing.assert_close(grasp_action_to_index(cmd), torch.tensor([0, 1, 1, 2, 2]))
    torch.testing.assert_close(grasp_index_to_action(torch.tensor([0, 1, 2])), torch.tensor([-1.0, 0.0, 1.0]))


def test_double_dqn_target_matches_hand_computation():
    loss = GraspCriticLoss(make_grasp_critic(OBS, hidden=(16,)))
    loss.make_value_estimator(gamma=0.9)
    with torch.no_grad():  # make online and target differ so double DQN is visible
        for p in loss.target_value_network_params.values(True, True):
            p.add_(0.3 * torch.randn_like(p))
    td = _batch()
    out = loss(td)

    def q(params, obs):
        with params.to_module(loss.value_network):
            return loss.value_network(TensorDict(observation=obs, batch_size=[B]))["grasp_q_values"]

    with torch.no_grad():
        a_star = q(loss.value_network_params, td["next", "observation"]).argmax(-1)
        next_q = q(loss.target_value_network_params, td["next", "observation"])[torch.arange(B), a_star]
        y = td["next", "reward"].squeeze(-1) - td["next", "grasp_penalty"].squeeze(-1) + 0.9 * next_q
        idx = td["action"][:, -1].long() + 1
        pred = q(loss.value_network_params, td["observation"])[torch.arange(B), idx]
    torch.testing.assert_close(out["loss_grasp_critic"], ((pred - y) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_terminal_target_is_reward_minus_penalty():
    loss = GraspCriticLoss(make_grasp_critic(OBS, hidden=(16,)))
    critic = loss.value_network
    td = _batch(terminated=True)
    out = loss(td)
    with loss.value_network_params.to_module(critic), torch.no_grad():
        q = critic(td.select("observation").clone())["grasp_q_values"]
    pred = q[torch.arange(B), td["action"][:, -1].long() + 1]
    y = (td["next", "reward"] - td["next", "grasp_penalty"]).squeeze(-1)
    torch.testing.assert_close(out["loss_grasp_critic"], ((pred - y) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_training_with_soft_update_fits_a_bandit():
    loss = GraspCriticLoss(make_grasp_critic(OBS, hidden=(32,)))
    updater = SoftUpdate(loss, tau=0.05)
    opt = torch.optim.Adam(loss.value_network_params.values(True, True), lr=3e-3)
    td = _batch(terminated=True)
    # One-step bandit: closing (index 2) pays 1, the other commands pay 0.
    td["next", "reward"] = (td["action"][:, -1:] > 0.5).float()
    td["next", "grasp_penalty"].zero_()
    target_before = loss.target_value_network_params.clone()
    for _ in range(300):
        opt.zero_grad()
        loss(td)["loss_grasp_critic"].backward()
        opt.step()
        updater.step()
    assert loss(td)["loss_grasp_critic"] < 1e-2
    assert not (loss.target_value_network_params == target_before).all()


def test_bad_input_raises():
    loss = GraspCriticLoss(make_grasp_critic(OBS, hidden=(8,)))
    with pytest.raises(KeyError, match="grasp_penalty"):
        loss(_batch().exclude(("next", "grasp_penalty")))
    with pytest.raises(ValueError, match="gamma"):
        loss.make_value_estimator(gamma=1.5)


def test_select_out_keys_and_no_done_key():
    loss = GraspCriticLoss(make_grasp_critic(OBS, hidden=(16,)))
    loss.select_out_keys("loss_grasp_critic")
    # only termination stops bootstrapping: a batch without "done" trains
    assert set(loss(_batch().exclude(("next", "done"))).keys()) == {"loss_grasp_critic"}
