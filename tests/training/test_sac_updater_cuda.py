"""SACUpdater(cudagraphs=True): each whole update recorded as one CUDA graph and replayed.

Needs a CUDA GPU (skipped otherwise; CI has none): run on a GPU machine with
``pytest tests/training/test_sac_updater_cuda.py``.
"""
import pytest
import torch
from tensordict import TensorDict

from torchrl_serl.training.builders import SACUpdater, make_drq_agent, make_sac_agent, make_sac_optimizers
from torchrl_serl.training.config import DrQConfig, SACConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

B, OBS, ACT, UTD = 64, 10, 4, 3
CFG = SACConfig(hidden=(64, 64), num_critics=4, critic_subsample=2, utd_ratio=UTD)


def _batches(n: int, seed: int = 0) -> list[TensorDict]:
    g = torch.Generator().manual_seed(seed)
    return [
        TensorDict(
            observation=torch.randn(B, OBS, generator=g),
            action=torch.rand(B, ACT, generator=g) * 2 - 1,
            next=TensorDict(
                observation=torch.randn(B, OBS, generator=g),
                reward=torch.rand(B, 1, generator=g),
                done=torch.zeros(B, 1, dtype=torch.bool),
                terminated=torch.zeros(B, 1, dtype=torch.bool),
                batch_size=[B],
            ),
            batch_size=[B],
        )
        for _ in range(n)
    ]


def _params(loss) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in loss.parameters()]).clone()


def _train(steps: int, compile: bool, cudagraphs: bool, bf16: bool = False):
    """(per-step logs, all loss parameters) after ``steps`` learner steps from a fixed init on
    fixed CPU batches (the updater moves them to the GPU)."""
    torch.manual_seed(0)
    agent = make_sac_agent(CFG, OBS, ACT, device="cuda")
    optims = make_sac_optimizers(agent.loss, CFG, capturable=cudagraphs)
    updater = SACUpdater(agent.loss, optims, agent.target_updater, UTD, compile=compile,
                         cudagraphs=cudagraphs, bf16=bf16)
    batches = iter(_batches(steps * UTD))
    torch.manual_seed(1)
    logs = [updater.update(lambda: next(batches)) for _ in range(steps)]
    return logs, _params(agent.loss), agent, updater


def test_cudagraphs_needs_capturable_optimizers():
    agent = make_sac_agent(CFG, OBS, ACT, device="cuda")
    with pytest.raises(ValueError, match="capturable=True"):
        SACUpdater(agent.loss, make_sac_optimizers(agent.loss, CFG), agent.target_updater, UTD, cudagraphs=True)


def test_cudagraphs_needs_the_action_bounds_on_the_gpu():
    """An actor built on the CPU and moved keeps float bounds: TanhNormal would copy them from the
    host in every update, which a CUDA graph cannot record. Refused with the fix named."""
    from torchrl_serl.modules import make_sac_actor, make_sac_critic
    from torchrl_serl.objectives.sac import SERLSACLoss
    from torchrl.objectives import SoftUpdate

    loss = SERLSACLoss(make_sac_actor(OBS, ACT, hidden=(64, 64)).to("cuda"),
                       make_sac_critic(OBS, ACT, num_critics=4, hidden=(64, 64)).to("cuda"), critic_subset=2)
    with pytest.raises(ValueError, match=r"make_sac_actor\(\.\.\., device='cuda:0'\)"):
        SACUpdater(loss, make_sac_optimizers(loss, CFG, capturable=True), SoftUpdate(loss, tau=0.005), UTD,
                   cudagraphs=True)


def test_replayed_updates_match_eager_updates():
    """Warm-up, capture and 4 replays give the eager updates' losses and weights: the graphs
    replay the recorded work on the new batches (same random stream, same results)."""
    logs_eager, params_eager, _, _ = _train(6, compile=False, cudagraphs=False)
    logs_graph, params_graph, _, _ = _train(6, compile=False, cudagraphs=True)
    for step, (a, b) in enumerate(zip(logs_eager, logs_graph)):
        for key in ("train/loss_qvalue", "train/loss_actor", "train/loss_alpha"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (step, key)
    torch.testing.assert_close(params_graph, params_eager, rtol=1e-4, atol=1e-5)


def test_bf16_replayed_updates_stay_close_to_float32_eager():
    logs_eager, _, _, _ = _train(3, compile=False, cudagraphs=False)
    logs_graph, _, agent, _ = _train(3, compile=False, cudagraphs=True, bf16=True)
    for a, b in zip(logs_eager, logs_graph):
        assert b["train/loss_qvalue"] == pytest.approx(a["train/loss_qvalue"], rel=0.1)
    assert all(p.dtype == torch.float32 for p in agent.loss.parameters())


def test_drq_pixel_updates_replay_as_cuda_graphs():
    """DrQ (small trained encoder, augmentation inside the loss) under CUDA graphs:
    the random shifts and critic subsets are drawn inside the graph, the encoder trains."""
    cfg = DrQConfig(encoder="small", hidden=(64, 64), num_critics=4, utd_ratio=2, batch_size=16)
    torch.manual_seed(0)
    agent = make_drq_agent(cfg, ("front", "wrist"), image_size=32, proprio_dim=7, action_dim=ACT, device="cuda")
    updater = SACUpdater(agent.loss, make_sac_optimizers(agent.loss, cfg, capturable=True), agent.target_updater,
                         cfg.utd_ratio, cudagraphs=True)
    g = torch.Generator().manual_seed(0)

    def sample():
        def obs():
            return {"front": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                    "wrist": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                    "observation": torch.randn(16, 7, generator=g)}
        return TensorDict(**obs(), action=torch.rand(16, ACT, generator=g) * 2 - 1,
                          next=TensorDict(**obs(), reward=torch.rand(16, 1, generator=g),
                                          done=torch.zeros(16, 1, dtype=torch.bool),
                                          terminated=torch.zeros(16, 1, dtype=torch.bool), batch_size=[16]),
                          batch_size=[16])

    encoder_before = torch.cat([p.detach().flatten().clone() for p in agent.loss.encoder_params.values(True, True)])
    logs = [updater.update(sample) for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(v)) for log in logs for v in log.values())
    encoder_after = torch.cat([p.detach().flatten() for p in agent.loss.encoder_params.values(True, True)])
    assert not torch.equal(encoder_before, encoder_after)


def test_replayed_updates_keep_training_and_refuse_bad_batches():
    """Compiled and replayed: each replay moves the weights and the targets; a NaN batch is
    refused before the replay and leaves every weight where it was."""
    _, _, agent, updater = _train(3, compile=True, cudagraphs=True)
    target = torch.cat([p.detach().flatten() for p in agent.loss.target_qvalue_network_params.values(True, True)])
    before = _params(agent.loss)
    batches = iter(_batches(UTD, seed=5))
    logs = updater.update(lambda: next(batches))
    after = _params(agent.loss)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert not torch.equal(before, after)
    new_target = torch.cat([p.detach().flatten() for p in agent.loss.target_qvalue_network_params.values(True, True)])
    assert not torch.equal(target, new_target)
    bad = _batches(1, seed=6)[0]
    bad["observation"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        updater.update(lambda: bad)
    torch.testing.assert_close(_params(agent.loss), after, rtol=0, atol=0)
