"""A TorchRL collector pulled by a thread of the learner process: the actor never waits for the learner.

TorchRL's :class:`~torchrl.collectors.AsyncCollector` steps the env in a process of its own, but
that process runs at most one batch ahead of the consumer: it collects the next batch while the
consumer holds the current one, then waits for the consumer to ask again. A learner that trains
between batches therefore stalls the actor for as long as its updates take, which on a real arm
stops the control loop mid-motion (issue 13). :class:`BackgroundCollector` iterates the collector
in a thread and queues the batches until the learner takes them (:meth:`drain`), so the actor
keeps stepping at its own pace (a real arm's control rate) whatever the learner does.

Backpressure is explicit: :meth:`set_frame_limit` stops taking batches once ``frames`` reaches the
limit (the actor process then finishes the batch it is collecting and waits). In simulation this
holds the actor to the learner's update-to-data ratio; on a real arm the limit stays off and the
control rate sets the pace.

If the learner process stops taking batches (it hangs or dies), the actor process stops after at
most two batches: TorchRL's worker steps only while its consumer keeps asking, and exits when the
consumer's pipe closes. A stopped actor holds the arm at its last target; it never keeps acting
on its own.
"""
from __future__ import annotations

import collections
import threading

from tensordict import TensorDictBase
from torchrl.collectors import MultiAsyncCollector
from torchrl.weight_update import SharedMemWeightSyncScheme


class _OneBatchPerActorCollector(MultiAsyncCollector):
    """TorchRL's MultiAsyncCollector with room in its output queue for one batch per actor.

    TorchRL 0.14 gives the workers one shared slot: a worker that cannot hand its batch over within
    1 s (another actor's batch is waiting there, the consumer holds them back) drops it and
    collects the next one, so a held actor keeps stepping its env and its steps are lost, with
    the ends of its episodes. With a slot per actor each worker hands its batch over and waits for
    the consumer's next request."""

    @property
    def _queue_len(self) -> int:
        return self.num_workers


class BackgroundCollector:
    """Takes batches from ``collector`` in a background thread and keeps them for :meth:`drain`.

    Args:
        collector: a multiprocess TorchRL collector (:class:`~torchrl.collectors.AsyncCollector`
            or :class:`~torchrl.collectors.MultiAsyncCollector`) whose workers step the env.

    Example:
        >>> feed = BackgroundCollector(AsyncCollector(make_env, policy, frames_per_batch=10, total_frames=-1))
        >>> feed.start()
        >>> while training:
        ...     for batch in feed.drain(timeout_s=0.1):   # [frames_per_batch] transitions each
        ...         buffer.extend(batch)
        ...     ...                                      # learner steps, at any pace
        ...     feed.update_policy_weights_()
        >>> feed.shutdown()
    """

    def __init__(self, collector: MultiAsyncCollector):
        self.collector = collector
        self._batches: collections.deque[TensorDictBase] = collections.deque()
        self._cond = threading.Condition()
        self._frames = 0  # frames taken from the collector (guarded by _cond)
        self._drained = 0  # frames handed to the learner by drain()
        self._frame_limit: int | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="BackgroundCollector", daemon=True)

    @classmethod
    def async_collector(cls, create_env_fn, policy, **collector_kwargs) -> BackgroundCollector:
        """Actor processes (a TorchRL :class:`~torchrl.collectors.MultiAsyncCollector`, one process per
        env function, each able to hand over a batch while the others' wait) behind a
        BackgroundCollector, not started yet.

        Args:
            create_env_fn: the env function, or a list of them (one actor process each: many
                actors, one learner; each receives the weights).
            policy: the policy the actors act with.
            **collector_kwargs: go to the collector; ``frames_per_batch`` and ``init_random_frames``
                count per actor, a ``create_env_kwargs`` dict goes to every actor.

        If an actor process fails to start (an arm that does not answer, a missing camera), its
        error is raised here and nothing is left behind: TorchRL 0.14 otherwise leaves the policy's
        weight-sync queues to a finalizer that hangs the interpreter at exit.
        """
        create_env_fns = list(create_env_fn) if isinstance(create_env_fn, (list, tuple)) else [create_env_fn]
        if isinstance(collector_kwargs.get("create_env_kwargs"), dict):
            collector_kwargs["create_env_kwargs"] = [collector_kwargs["create_env_kwargs"]] * len(create_env_fns)
        # TorchRL's default for a CPU policy, owned here; not waiting for the actors' acknowledgement,
        # which never comes from an actor that has died (Ctrl-C, a lost arm): the push is a copy into
        # shared memory that each actor's receiver thread applies
        weight_sync = SharedMemWeightSyncScheme(sync=False)
        try:
            collector = _OneBatchPerActorCollector(create_env_fns, policy, weight_sync_schemes={"policy": weight_sync},
                                                   **collector_kwargs)
        except BaseException:
            weight_sync.shutdown()
            raise
        return cls(collector)

    def start(self) -> BackgroundCollector:
        self._thread.start()
        return self

    @property
    def frames(self) -> int:
        """Env steps taken from the collector so far (drained or still queued)."""
        with self._cond:
            return self._frames

    @property
    def pending(self) -> int:
        """Batches queued for :meth:`drain`."""
        with self._cond:
            return len(self._batches)

    def set_frame_limit(self, frames: int | None) -> None:
        """Take no batch once :attr:`frames` reaches ``frames`` (``None``: no limit).

        The actor process runs at most two batches past the limit: the one it is collecting
        when the thread stops asking, and the one TorchRL's worker has already handed over.
        """
        with self._cond:
            self._frame_limit = None if frames is None else int(frames)
            self._cond.notify_all()

    def hold_ahead(self, frames: int) -> None:
        """Take at most ``frames`` env steps more than :meth:`drain` has handed out: called after the
        learner has trained on every drained batch, it holds the actor that far ahead of the learner
        (simulation; a real arm runs without a limit)."""
        self.set_frame_limit(self._drained + frames)

    def drain(self, timeout_s: float = 0.0) -> list[TensorDictBase]:
        """The batches collected since the last call, oldest first; waits up to ``timeout_s``
        for the first one. Raises ``RuntimeError`` if the collector failed."""
        with self._cond:
            if not self._batches and self._error is None and timeout_s > 0:
                self._cond.wait_for(lambda: self._batches or self._error is not None, timeout=timeout_s)
            if self._error is not None and not self._batches:
                raise RuntimeError(f"the collector stopped: {self._error!r}") from self._error
            batches = list(self._batches)
            self._batches.clear()
            self._drained += sum(b.numel() for b in batches)
            return batches

    def update_policy_weights_(self) -> None:
        """Sends the learner's current policy weights to the actor process(es); returns without
        waiting for them (see :meth:`async_collector`)."""
        self.collector.update_policy_weights_()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stops the thread and the collector's processes (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        # the thread is waiting on the frame limit (woken above) or on the worker's next batch
        # (which comes within one batch time, or never if the worker is gone)
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        self.collector.shutdown()

    def _may_take(self) -> bool:
        return self._stopping or self._frame_limit is None or self._frames < self._frame_limit

    def _run(self) -> None:
        try:
            for batch in self.collector:
                with self._cond:
                    self._frames += batch.numel()
                    self._batches.append(batch)
                    self._cond.notify_all()
                    self._cond.wait_for(self._may_take)
                    if self._stopping:
                        return
        except BaseException as err:  # noqa: BLE001 - handed to the learner by drain()
            with self._cond:
                if not self._stopping:
                    self._error = err
                self._cond.notify_all()
