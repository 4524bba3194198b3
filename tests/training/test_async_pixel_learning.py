"""An asynchronous pixel run learns something measurable: the actor process, seeing only camera
images, points better and better as the learner's weights reach it.

A one-step task seen through two cameras: a bright square sits at a random column of a 64x64 image
and the reward is ``-|a_0 - x|`` with ``x`` in [-1, 1] the square's column. The actor is a TorchRL
``AsyncCollector`` worker behind ``BackgroundCollector`` (as in ``recipes/drq.py``), encoding each
frame once with the agent's frozen ResNet-10 (random weights, ``TrunkFeatures``, 2 views); the
learner (this process) trains DrQ on the cached features, held to half a learner step per env step,
and pushes its weights after each round. Only weights that reach the actor can improve its batches.
"""
import functools

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase, TransformedEnv

from torchrl_serl.data.replay_factory import make_pixel_replay_buffer, transitions
from torchrl_serl.modules.encoders.cached_features import feature_key
from torchrl_serl.training.agent_factory import make_drq_agent, make_trunk_features
from torchrl_serl.training.background_collector import BackgroundCollector
from torchrl_serl.training.config import DrQConfig
from torchrl_serl.training.run_counters import RunCounters
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers

SIZE, CAMERAS, PROPRIO, ACTIONS = 64, ("front", "wrist"), 7, 4


class PointAtSquareEnv(EnvBase):
    """One step per episode: point ``action[0]`` at the column of the square in both images."""

    def __init__(self, seed: int = 0):
        super().__init__(batch_size=torch.Size([]))
        self.observation_spec = Composite(
            **{cam: Bounded(0, 255, (3, SIZE, SIZE), dtype=torch.uint8) for cam in CAMERAS},
            observation=Unbounded((PROPRIO,)),
        )
        self.action_spec = Bounded(-1.0, 1.0, (ACTIONS,))
        self.reward_spec = Unbounded((1,))
        self._set_seed(seed)

    def _frame(self) -> TensorDict:
        column = int(torch.randint(0, SIZE - 12, (1,), generator=self.rng))
        self.target = column / (SIZE - 12) * 2 - 1
        img = torch.full((3, SIZE, SIZE), 30, dtype=torch.uint8)
        img[:, 26:38, column:column + 12] = 250
        return TensorDict(front=img, wrist=img.clone(), observation=torch.zeros(PROPRIO))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        return self._frame().update({"done": torch.zeros(1, dtype=torch.bool),
                                     "terminated": torch.zeros(1, dtype=torch.bool)})

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        reward = -abs(float(tensordict["action"][0]) - self.target)
        return self._frame().update({"reward": torch.tensor([reward]), "done": torch.ones(1, dtype=torch.bool),
                                     "terminated": torch.ones(1, dtype=torch.bool)})

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator().manual_seed(seed or 0)


def make_actor_env(trunk_features, seed: int) -> EnvBase:
    return TransformedEnv(PointAtSquareEnv(seed), trunk_features)


def test_async_pixel_run_points_better_as_weights_reach_the_actor(tmp_path):
    torch.manual_seed(0)
    cfg = DrQConfig(feature_views=2, hidden=(64, 64), num_critics=2, utd_ratio=2, batch_size=64,
                    actor_lr=1e-3, critic_lr=1e-3)
    agent = make_drq_agent(cfg, CAMERAS, SIZE, PROPRIO, ACTIONS)
    updater = SACUpdater(agent.loss, make_sac_optimizers(agent.loss, cfg), agent.target_updater, cfg.utd_ratio)
    buffer = make_pixel_replay_buffer(4096, 128, tmp_path / "rb", pixel_keys=tuple(feature_key(c) for c in CAMERAS))
    frames_per_batch, random_steps, total_steps, updates_per_step = 16, 128, 1536, 0.5
    actor = BackgroundCollector.async_collector(
        functools.partial(make_actor_env, make_trunk_features(agent, cfg, seed=0), 0), agent.policy,
        frames_per_batch=frames_per_batch, total_frames=-1, init_random_frames=random_steps)
    run, errors = RunCounters(), []  # |a_0 - x| of every actor step, in order
    try:
        actor.hold_ahead(frames_per_batch)
        actor.start()
        while run.step < total_steps:
            for batch in actor.drain(timeout_s=1.0):
                buffer.extend(transitions(batch, drop_images=CAMERAS))
                errors.append(-batch["next", "reward"].flatten())
                run.advance(batch.numel())
                for _ in range(run.updates_owed(updates_per_step, training_starts=random_steps)):
                    updater.update(buffer.sample(128))
                    run.updates += 1
            actor.update_policy_weights_()
            actor.hold_ahead(frames_per_batch)
    finally:
        actor.shutdown()
    errors = torch.cat(errors)
    random_error = float(errors[:random_steps].mean())  # uniform actions: ~0.67 on average
    final_error = float(errors[-256:].mean())  # the actor's own (stochastic) actions, last 256 steps
    print(f"actor pointing error: random {random_error:.3f}, last 256 steps {final_error:.3f}; "
          f"{run.updates} learner steps for {run.step} env steps")
    assert run.updates == int(updates_per_step * (run.step - random_steps + 1))  # the ratio held exactly
    assert final_error < 0.6 * random_error, (random_error, final_error)
