import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.agents import DrQAgent, SACAgent


def serl_state_batch(b, obs_dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, obs_dim, generator=g)
    return {
        "observations": obs,
        "actions": torch.rand(b, 4, generator=g) * 2 - 1,
        "next_observations": obs + 0.1 * torch.randn(b, obs_dim, generator=g),
        "rewards": -obs[:, :3].norm(dim=-1),
        "masks": torch.ones(b),
        "dones": torch.zeros(b),
    }


def serl_pixel_batch(b, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def obs():
        # SERL layout: channels-last images and a "state" vector.
        return {
            "front": torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g),
            "wrist": torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g),
            "state": torch.randn(b, 7, generator=g),
        }

    return {
        "observations": obs(),
        "actions": torch.rand(b, 4, generator=g) * 2 - 1,
        "next_observations": obs(),
        "rewards": torch.randn(b, generator=g),
        "masks": torch.ones(b),
        "dones": torch.zeros(b),
    }


def test_sac_agent_create_update_sample():
    batch = serl_state_batch(64)
    agent = SACAgent.create_states(
        batch["observations"][:1],
        batch["actions"][:1],
        critic_network_kwargs={"hidden_dims": [64, 64], "use_layer_norm": True},
        policy_network_kwargs={"hidden_dims": [64, 64]},
        critic_ensemble_size=4,
        critic_optimizer_kwargs={"learning_rate": 1e-3, "clip_grad_norm": 1.0, "warmup_steps": 10},
    )
    actor_before = [p.detach().clone() for p in agent.params["actor"]]
    critic_before = [p.detach().clone() for p in agent.params["critic"]]
    info = agent.update(batch, utd_ratio=4)
    assert {"loss_qvalue", "loss_actor", "loss_alpha", "alpha", "critic_grad_norm"} <= info.keys()
    assert all(isinstance(v, float) for v in info.values())
    assert all(not torch.equal(a, b) for a, b in zip(actor_before, agent.params["actor"]))
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, agent.params["critic"]))
    # 4 critic steps of the warm-up schedule: lr = 1e-3 * 4 / 10.
    assert agent.optimizers["critic"].param_groups[0]["lr"] == pytest.approx(4e-4)
    act = agent.sample_actions(batch["observations"][:5])
    assert act.shape == (5, 4) and act.abs().max() <= 1
    det = agent.sample_actions(batch["observations"][:5], deterministic=True)
    assert torch.equal(det, agent.sample_actions(batch["observations"][:5], deterministic=True))


def test_sac_agent_update_is_the_recipes_learner_step():
    """``update(batch, utd_ratio=4)``: SACUpdater's schedule, 4 critic steps (3 critic-only, then
    one with actor and temperature) and one actor and temperature step."""
    batch = serl_state_batch(16)
    agent = SACAgent.create_states(batch["observations"], batch["actions"], critic_ensemble_size=3)
    steps = []
    for name, optim in agent.optimizers.items():
        optim.register_step_post_hook(lambda opt, args, kwargs, name=name: steps.append(name))
    agent.update(batch, utd_ratio=4)
    assert steps == ["critic"] * 3 + ["critic", "actor", "temperature"]


def test_sac_agent_learns_a_fixed_batch_critic():
    torch.manual_seed(0)
    batch = serl_state_batch(64)
    agent = SACAgent.create_states(batch["observations"], batch["actions"], critic_ensemble_size=2)
    first = agent.update(batch, utd_ratio=2)["loss_qvalue"]
    for _ in range(60):
        last = agent.update(batch, utd_ratio=2)["loss_qvalue"]
    assert last < 0.5 * first


def test_drq_agent_pixels_serl_layout():
    batch = serl_pixel_batch(8)
    agent = DrQAgent.create_pixels(
        {k: v[:1] for k, v in batch["observations"].items()},
        batch["actions"][:1],
        encoder_type="small",
        critic_ensemble_size=4,
        critic_network_kwargs={"hidden_dims": [32, 32]},
        policy_network_kwargs={"hidden_dims": [32, 32]},
    )
    trunk = agent.encoder.trunk("front")
    calls = []
    trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    heads_before = [p.detach().clone() for p in agent.encoder.head_parameters()]
    info = agent.update(batch, utd_ratio=4)  # 3 critic-only + 1 full update on minibatches of 2
    assert {"loss_qvalue", "loss_actor", "loss_alpha", "entropy"} <= info.keys()
    # Trained trunk: obs (online), next obs for the policy and for the target, per minibatch.
    assert calls == [2 * 2] * 3 * 4
    assert all(not torch.equal(a, b) for a, b in zip(heads_before, agent.encoder.head_parameters()))
    act = agent.sample_actions({k: v[:3] for k, v in batch["observations"].items()})
    assert act.shape == (3, 4) and act.abs().max() <= 1


def test_drq_agent_frozen_resnet_tensordict_batch_and_no_proprio(tmp_path):
    from torchrl_serl.modules.encoders import resnet10

    torch.save(resnet10().state_dict(), tmp_path / "trunk.pt")
    b, size = 4, 32
    img = lambda: torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)  # noqa: E731
    agent = DrQAgent.create_pixels(
        {"front": img()[:1]},
        torch.zeros(1, 4),
        image_keys=("front",),
        encoder_type="resnet-pretrained",
        pretrained_path=tmp_path / "trunk.pt",
        use_proprio=False,
        critic_ensemble_size=2,
    )
    td = TensorDict(
        front=img(),
        action=torch.zeros(b, 4),
        next=TensorDict(
            front=img(), reward=torch.ones(b, 1), done=torch.zeros(b, 1, dtype=torch.bool),
            terminated=torch.zeros(b, 1, dtype=torch.bool), batch_size=[b],
        ),
        batch_size=[b],
    )
    trunk_before = [p.clone() for p in agent.encoder.trunk_parameters()]
    info = agent.update(td, utd_ratio=2)
    assert torch.isfinite(torch.tensor(list(info.values()))).all()
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, agent.encoder.trunk_parameters()))
    state = agent.state_dict()
    other = DrQAgent.create_pixels(
        {"front": img()[:1]}, torch.zeros(1, 4), image_keys=("front",), use_proprio=False, critic_ensemble_size=2
    )
    other.load_state_dict(state)  # the frozen pretrained trunk travels with the policy state
    assert torch.equal(other.encoder.trunk("front").conv_init.weight, agent.encoder.trunk("front").conv_init.weight)
    obs = {"front": img()}
    assert torch.equal(other.sample_actions(obs, deterministic=True), agent.sample_actions(obs, deterministic=True))


def test_agent_bad_arguments():
    batch = serl_state_batch(6)
    agent = SACAgent.create_states(batch["observations"], batch["actions"], critic_ensemble_size=2)
    with pytest.raises(ValueError, match="divisible by utd_ratio=4"):
        agent.update(batch, utd_ratio=4)
    with pytest.raises(ValueError, match="utd_ratio must be an int >= 1"):
        agent.update(batch, utd_ratio=0)
    with pytest.raises(KeyError, match="masks"):
        agent.update({k: v for k, v in batch.items() if k != "masks"})
    with pytest.raises(ValueError, match=r"\[\*B, 10\]"):
        agent.sample_actions(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unsupported keys \\['dropout_rate'\\]"):
        SACAgent.create_states(batch["observations"], batch["actions"], critic_network_kwargs={"dropout_rate": 0.1})
    with pytest.raises(ValueError, match="encoder_type must be one of"):
        DrQAgent.create_pixels(serl_pixel_batch(1)["observations"], batch["actions"], encoder_type="resnet18")
