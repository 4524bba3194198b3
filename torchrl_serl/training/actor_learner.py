"""Asynchronous actor and learner on one machine (SERL's actor/learner split, TorchRL machinery).

The actor is a TorchRL :class:`~torchrl.collectors.MultiAsyncCollector` worker process that runs
"free" (``collector.start()``): it steps the environment continuously and writes every batch of
transitions straight into the learner's shared replay buffer, never waiting for the learner. The
learner (this process) samples that buffer at whatever update-to-data ratio it can sustain and
pushes fresh policy weights through a :mod:`torchrl.weight_update` scheme. Each frame is tagged
with the version of the weights that produced it under ``("next", "policy_version")``, which is
what :meth:`ActorLearner.policy_lag` measures.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import MultiAsyncCollector
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase, ExplorationType
from torchrl.weight_update import MultiProcessWeightSyncScheme, WeightSyncScheme

POLICY_VERSION_KEY = ("next", "policy_version")


class ActorLearner:
    """Runs ``num_actors`` actor processes that stream into ``replay_buffer`` while this process learns.

    Args:
        create_env_fn: picklable callable returning the environment an actor steps.
        policy: the learner's policy module; the actors act with copies of its weights.
        replay_buffer: buffer the actors extend; it must be shareable across processes
            (e.g. ``TensorDictReplayBuffer(storage=LazyTensorStorage(n), shared=True)``).

    Keyword Args:
        frames_per_batch: env steps an actor collects before one write to the buffer
            (summed over actors). Small values mean fresher data, more IPC.
        num_actors: actor processes (each with its own environment).
        init_random_frames: the first frames are taken with a uniformly random policy.
        weight_sync_scheme: how weights reach the actors; defaults to
            :class:`~torchrl.weight_update.MultiProcessWeightSyncScheme` (synchronous: a push
            returns once every actor acts with the new weights, which bounds staleness).
        exploration_type: how the actors sample actions (``RANDOM`` for SAC exploration).
        seed: seeds the actors' environments.

    Example:
        >>> al = ActorLearner(make_env, policy, rb, frames_per_batch=10)
        >>> with al:
        ...     al.start()
        ...     al.wait_for_frames(256)
        ...     for step in range(1000):
        ...         update(rb.sample(256))        # any learner step
        ...         if step % 10 == 0:
        ...             al.push_weights(learner_step=step)
    """

    def __init__(
        self,
        create_env_fn: Callable[[], EnvBase],
        policy: TensorDictModuleBase,
        replay_buffer: ReplayBuffer,
        *,
        frames_per_batch: int = 10,
        num_actors: int = 1,
        init_random_frames: int = 0,
        weight_sync_scheme: WeightSyncScheme | None = None,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        seed: int | None = None,
    ):
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}.")
        if frames_per_batch < num_actors:
            raise ValueError(
                f"frames_per_batch must be >= num_actors ({num_actors}), got {frames_per_batch}."
            )
        if init_random_frames < 0:
            raise ValueError(f"init_random_frames must be >= 0, got {init_random_frames}.")
        self.policy = policy
        self.replay_buffer = replay_buffer
        self.frames_per_batch = frames_per_batch
        self.collector = MultiAsyncCollector(
            [create_env_fn] * num_actors,
            policy=policy,
            replay_buffer=replay_buffer,
            frames_per_batch=frames_per_batch,
            total_frames=-1,
            init_random_frames=init_random_frames,
            exploration_type=exploration_type,
            weight_sync_schemes={"policy": weight_sync_scheme or MultiProcessWeightSyncScheme()},
            track_policy_version=True,
        )
        if seed is not None:
            self.collector.set_seed(seed)
        self.version = 0
        # learner step at which each weight version was pushed, to express lag in learner steps
        self._step_at_version = {0: 0}
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Lets the actors run free: from here on they act and write without waiting."""
        self.collector.start()
        self._started = True

    @property
    def frames(self) -> int:
        """Transitions the actors have finished writing.

        TorchRL's writer bumps ``write_count`` before it copies the data, and the actors copy
        at most ``frames_per_batch`` transitions at a time, so the rows below
        ``write_count - frames_per_batch`` are complete; the newest ones may not be yet.
        """
        return max(0, int(self.replay_buffer.write_count) - self.frames_per_batch)

    def wait_for_frames(self, n: int, timeout_s: float = 60.0) -> int:
        """Blocks until the actors have written ``n`` transitions; raises ``TimeoutError`` after ``timeout_s``."""
        if not self._started:
            raise RuntimeError("call start() before wait_for_frames().")
        deadline = time.monotonic() + timeout_s
        while self.frames < n:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"actors wrote {self.frames} of {n} frames within {timeout_s} s."
                )
            time.sleep(0.01)
        return self.frames

    def push_weights(self, learner_step: int) -> int:
        """Sends the learner's current policy weights to every actor; returns the new version.

        With the default synchronous scheme this returns once the actors act with the new
        weights, so the actors are never more than one push behind.
        """
        self.collector.update_policy_weights_()
        self.version += 1
        self._step_at_version[self.version] = int(learner_step)
        return self.version

    def actor_version(self) -> int:
        """Weight version that produced the newest complete transition in the buffer (-1 if none)."""
        n = self.frames
        if n == 0:
            return -1
        storage = self.replay_buffer.storage
        # the storage is a ring: the newest write sits just behind the write cursor
        idx = (n - 1) % storage.max_size
        return int(storage[idx][POLICY_VERSION_KEY])

    def policy_lag(self, learner_step: int) -> int:
        """Learner steps between ``learner_step`` and the weights behind the newest transition."""
        version = self.actor_version()
        if version < 0:
            raise RuntimeError("no transition has been written yet.")
        return int(learner_step) - self._step_at_version[version]

    def close(self) -> None:
        """Stops the actor processes (idempotent)."""
        if not self._closed:
            self._closed = True
            self.collector.async_shutdown()

    def __enter__(self) -> ActorLearner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
