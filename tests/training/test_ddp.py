"""Data-parallel learner: gloo on CPU, 2 processes; ranks stay identical and match one process on the joint batch."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
from tensordict import TensorDict

from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.config import SACConfig
from torchrl_serl.training.ddp import DDPSACUpdater, init_ddp, init_ddp_from_env
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

WORLD, B, STEPS, UTD, OBS, ACT = 2, 16, 3, 3, 10, 4
CFG = SACConfig(hidden=(32, 32), num_critics=4, critic_subsample=2, utd_ratio=UTD, actor_lr=1e-2, critic_lr=1e-2, alpha_lr=1e-2)


def _agent():
    torch.manual_seed(0)
    agent = make_sac_agent(CFG, OBS, ACT)
    return agent, make_sac_optimizers(agent.loss, CFG)


def _batches() -> list[TensorDict]:
    """STEPS joint batches of WORLD * UTD * B transitions (rank r takes rows r*UTD*B:(r+1)*UTD*B; the
    joint batch's minibatch i, rows i::UTD, is then the ranks' minibatches i one after the other)."""
    g = torch.Generator().manual_seed(1)
    n = WORLD * UTD * B

    def batch():
        return TensorDict(
            observation=torch.randn(n, OBS, generator=g),
            action=torch.rand(n, ACT, generator=g) * 2 - 1,
            next=TensorDict(
                observation=torch.randn(n, OBS, generator=g),
                reward=torch.rand(n, 1, generator=g),
                done=torch.rand(n, 1, generator=g) < 0.1,
                terminated=torch.rand(n, 1, generator=g) < 0.1,
                batch_size=[n],
            ),
            batch_size=[n],
        )

    return [batch() for _ in range(STEPS)]


def _rank_rng(rank: int) -> torch.Tensor:
    # each rank samples its own actions/critic subsets: different noise per rank
    return torch.Generator().manual_seed(100 + rank).get_state()


def _ddp_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    init_ddp(rank, WORLD, master_port=port, backend="gloo")
    try:
        agent, optims = _agent()
        if rank == 1:
            # a different init on rank 1, target networks included: the updater must start every
            # rank from rank 0's parameters and targets
            with torch.no_grad():
                for p in agent.loss.state_dict().values():
                    if p.is_floating_point():
                        p.add_(1.0)
        updater = DDPSACUpdater(agent.loss, optims, agent.target_updater, UTD)
        torch.set_rng_state(_rank_rng(rank))
        for joint in _batches():
            updater.update(joint[rank * UTD * B : (rank + 1) * UTD * B])
        torch.save({k: v.clone() for k, v in agent.loss.state_dict().items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_process_reference() -> dict:
    """Stock SACUpdater, one process: each loss is the mean over the joint batch, computed as the
    mean of the per-rank halves' means so that each half sees the same noise its rank drew."""
    agent, optims = _agent()
    updater = SACUpdater(agent.loss, optims, agent.target_updater, UTD)
    states = [_rank_rng(r) for r in range(WORLD)]

    def joint_mean(fn):
        def call(joint):
            outs = []
            for r in range(WORLD):
                torch.set_rng_state(states[r])
                outs.append(fn(joint[r * B : (r + 1) * B]))
                states[r] = torch.get_rng_state()
            return {k: torch.stack([o[k] for o in outs]).mean() for k in outs[0].keys()}

        return call

    updater._critic_loss = joint_mean(agent.loss.loss_critic)
    updater._full_loss = joint_mean(agent.loss)
    for joint in _batches():
        updater.update(joint)
    return agent.loss.state_dict()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_agree_and_match_the_joint_batch(tmp_path):
    tmp_mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    reference = _single_process_reference()
    initial = _agent()[0].loss.state_dict()
    assert ranks[0].keys() == reference.keys()
    moved = 0
    for key, ref in reference.items():
        # identical across ranks, bit for bit: same averaged gradients, same optimizer updates
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(ranks[0][key], ref, rtol=1e-5, atol=1e-6, msg=key)
        moved += not torch.equal(ref, initial[key])
    assert moved > 0.5 * len(reference), "the updates left most parameters unchanged"


def test_updater_needs_a_process_group():
    agent, optims = _agent()
    with pytest.raises(RuntimeError, match="init_ddp"):
        DDPSACUpdater(agent.loss, optims, agent.target_updater, UTD)
    with pytest.raises(ValueError, match="rank"):
        init_ddp(2, 2)
    with pytest.raises(ValueError, match="cudagraphs"):
        DDPSACUpdater(agent.loss, optims, agent.target_updater, UTD, compile=True)


def test_without_torchrun_a_group_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_ddp_from_env("gloo") == (0, 1, 0)
    try:
        assert dist.get_world_size() == 1
        agent, optims = _agent()
        updater = DDPSACUpdater(agent.loss, optims, agent.target_updater, UTD, bf16=True)
        metrics = updater.update(_batches()[0][: UTD * B])
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    finally:
        dist.destroy_process_group()
