"""Actor and learner on different machines, linked through a ``torch.distributed.TCPStore``.

SERL runs the actor on the robot PC and the learner on a GPU box. TorchRL's distributed collectors
(``RPCCollector``, ``DistributedCollector``) cannot give the semantics SERL needs: the learner
*launches* their workers, and they join a torch.distributed/RPC group whose world is fixed at
``init_process_group``/``init_rpc``; a rank that dies breaks the group and cannot rejoin it. So a
learner restart would take the actor down. This module builds on the torch.distributed primitive
under those groups instead, the ``TCPStore`` (no extra dependency, no hand-made socket protocol):

- the learner hosts the store (:class:`LearnerLink`), publishes ``(session, version, weights)``
  and pops transition batches from a store queue;
- the actor (:class:`RemoteActor`) steps a TorchRL :class:`~torchrl.collectors.Collector` in its
  main loop and never waits on the network; a background thread pushes batches, fetches newer
  weights and reconnects when the learner goes away (batches wait in a bounded local backlog);
- every call across the link has a deadline (``timeout_s``): a dead or hung peer raises
  :class:`LinkError` instead of blocking.

Payloads are ``torch.save`` archives of plain tensors, loaded with ``weights_only=True``.
"""
from __future__ import annotations

import collections
import io
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, ExplorationType

_WEIGHTS = "serl/weights"
_WEIGHTS_TAG = "serl/weights_tag"
_TRANSITIONS = "serl/transitions"
_BEATS = "serl/actor_beats"


class LinkError(RuntimeError):
    """A call across the actor/learner link failed or missed its deadline."""


def _check_address(host: str, port: int, timeout_s: float) -> None:
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}.")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be in [1, 65535], got {port}.")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}.")


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _loads(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def batch_to_bytes(batch: TensorDictBase) -> bytes:
    """Serialises a batch of transitions (tensors only) for the link."""
    return _dumps({"batch_size": list(batch.batch_size), "data": batch.to_dict()})


def batch_from_bytes(data: bytes) -> TensorDict:
    """Inverse of :func:`batch_to_bytes`."""
    payload = _loads(data)
    return TensorDict(payload["data"], batch_size=payload["batch_size"])


class LearnerLink:
    """Learner side of the link: hosts the store the actors connect to.

    Args:
        host: address to listen on (``"0.0.0.0"`` for every interface of the GPU box).
        port: TCP port; a restarted learner binds the same port and the actors reconnect.
        timeout_s: deadline of every store call, seconds.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 29550, timeout_s: float = 10.0):
        _check_address(host, port, timeout_s)
        self.session = uuid.uuid4().hex
        self.timeout_s = timeout_s
        try:
            self._store = dist.TCPStore(
                host, port, is_master=True, wait_for_workers=False,
                timeout=timedelta(seconds=timeout_s),
            )
        except Exception as err:
            raise LinkError(f"cannot listen on {host}:{port}: {err}") from err
        self._last_beats = 0
        self._last_beat_time = None

    def publish_weights(self, policy: nn.Module, version: int) -> None:
        """Makes ``policy``'s weights the ones the actors fetch next, tagged ``version``."""
        state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        # weights first, tag second: an actor that sees the new tag always finds the new weights
        self._store.set(_WEIGHTS, _dumps({"session": self.session, "version": int(version), "state": state}))
        self._store.set(_WEIGHTS_TAG, f"{self.session}:{int(version)}")

    def pull(self, max_batches: int = 1000) -> list[TensorDict]:
        """Pops up to ``max_batches`` transition batches the actors pushed (non-blocking)."""
        batches = []
        for _ in range(min(int(self._store.queue_len(_TRANSITIONS)), max_batches)):
            batches.append(batch_from_bytes(self._store.queue_pop(_TRANSITIONS, block=False)))
        return batches

    def actor_seen_within(self, seconds: float) -> bool:
        """Whether an actor sent a heartbeat in the last ``seconds`` (by the learner's clock)."""
        beats = int(self._store.add(_BEATS, 0))
        now = time.monotonic()
        if beats != self._last_beats:
            self._last_beats, self._last_beat_time = beats, now
        return self._last_beat_time is not None and now - self._last_beat_time <= seconds

    def close(self) -> None:
        """Stops listening (the actors keep acting and retry)."""
        self._store = None


class ActorLink:
    """Actor side of the link: a store client whose every call has a deadline.

    Each method raises :class:`LinkError` when the learner is unreachable, dead or does not
    answer within ``timeout_s``. The store's own timeout only bounds its *wait* operations (a
    ``get`` from a hung peer blocks forever), so each call runs on a helper thread and is
    abandoned at the deadline together with its connection.
    """

    def __init__(self, host: str, port: int, timeout_s: float = 5.0):
        _check_address(host, port, timeout_s)
        self.host, self.port, self.timeout_s = host, int(port), timeout_s
        self._store = None

    @property
    def connected(self) -> bool:
        return self._store is not None

    def _with_deadline(self, what: str, fn: Callable):
        result = {}

        def target():
            try:
                result["value"] = fn()
            except Exception as err:  # re-raised in the caller's thread below
                result["error"] = err

        # a daemon thread, not an executor: one blocked in a hung peer must not hold up exit
        thread = threading.Thread(target=target, daemon=True, name=f"serl-link-{what}")
        thread.start()
        thread.join(self.timeout_s)
        if "value" in result:
            return result["value"]
        # the connection is in an unknown state (the thread may stay blocked in it until the
        # peer dies or resumes): forget it, the next call reconnects
        self._store = None
        if thread.is_alive():
            raise LinkError(
                f"{what} to learner {self.host}:{self.port} missed its {self.timeout_s} s deadline"
            )
        raise LinkError(f"{what} to learner {self.host}:{self.port} failed: {result['error']}") from result["error"]

    def connect(self) -> None:
        def open_store():
            return dist.TCPStore(
                self.host, self.port, is_master=False, timeout=timedelta(seconds=self.timeout_s)
            )

        try:
            self._store = self._with_deadline("connect", open_store)
        except LinkError as err:
            raise LinkError(f"cannot reach learner {self.host}:{self.port}: {err}") from err

    def _call(self, what: str, fn: Callable):
        if self._store is None:
            self.connect()
        store = self._store
        return self._with_deadline(what, lambda: fn(store))

    def push(self, batch: TensorDictBase) -> None:
        """Sends one batch of transitions to the learner's queue."""
        data = batch_to_bytes(batch)
        self._call("push", lambda s: s.queue_push(_TRANSITIONS, data))

    def heartbeat(self) -> None:
        self._call("heartbeat", lambda s: s.add(_BEATS, 1))

    def weights_tag(self) -> str | None:
        """``"session:version"`` of the newest published weights, ``None`` before the first."""
        def get(s):
            return s.get(_WEIGHTS_TAG).decode() if s.check([_WEIGHTS_TAG]) else None

        return self._call("weights_tag", get)

    def fetch_weights(self) -> tuple[str, int, dict[str, torch.Tensor]]:
        """Returns ``(session, version, state_dict)`` of the newest published weights."""
        payload = _loads(self._call("fetch_weights", lambda s: s.get(_WEIGHTS)))
        return payload["session"], int(payload["version"]), payload["state"]


class RemoteActor:
    """Acts on the robot PC with the learner's latest weights, whatever the link does.

    The main loop is a TorchRL :class:`~torchrl.collectors.Collector`; it only hands batches to a
    bounded backlog and applies weights a background thread has already fetched, so a slow,
    restarting or dead learner never stalls the control loop. Every frame carries the learner's
    weight version under ``("next", "policy_version")`` (-1 before the first weights arrive).

    Args:
        create_env_fn: returns the environment (the robot or its simulation).
        policy: module with the learner's architecture; its weights are replaced as they arrive.

    Keyword Args:
        host, port: the learner's :class:`LearnerLink` address.
        frames_per_batch: env steps per pushed batch.
        timeout_s: deadline of every call to the learner.
        reconnect_every_s: pause between reconnection attempts while the learner is away.
        max_backlog: batches kept while disconnected; the oldest are dropped beyond it.
        init_random_frames: frames taken with a uniformly random policy first.
        exploration_type: action sampling of the policy.
        seed: environment seed.
    """

    def __init__(
        self,
        create_env_fn: Callable[[], EnvBase],
        policy: nn.Module,
        *,
        host: str,
        port: int,
        frames_per_batch: int = 10,
        timeout_s: float = 5.0,
        reconnect_every_s: float = 1.0,
        max_backlog: int = 1000,
        init_random_frames: int = 0,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        seed: int | None = None,
    ):
        if frames_per_batch < 1:
            raise ValueError(f"frames_per_batch must be >= 1, got {frames_per_batch}.")
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog}.")
        self.link = ActorLink(host, port, timeout_s)
        self.policy = policy
        self.reconnect_every_s = reconnect_every_s
        env = create_env_fn()
        if seed is not None:
            env.set_seed(seed)
        self.collector = Collector(
            env,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=-1,
            init_random_frames=init_random_frames,
            exploration_type=exploration_type,
            track_policy_version=True,
            auto_register_policy_transforms=False,
        )
        self.collector.policy_version_tracker.version = -1
        self._backlog = collections.deque(maxlen=max_backlog)
        self._pending = None  # (version, state) fetched by the link thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stats = {
            "frames": 0, "sent": 0, "dropped": 0, "link_errors": 0, "weights_version": -1, "weight_updates": 0,
        }

    def _service_link(self) -> None:
        fetched = None  # tag of the newest weights handed to the control loop
        while not self._stop.is_set():
            try:
                if not self.link.connected:
                    self.link.connect()
                while self._backlog:
                    batch = self._backlog.popleft()
                    try:
                        self.link.push(batch)
                    except LinkError:
                        # put it back unless newer batches filled the backlog meanwhile
                        if len(self._backlog) < self._backlog.maxlen:
                            self._backlog.appendleft(batch)
                        raise
                    self.stats["sent"] += 1
                self.link.heartbeat()
                tag = self.link.weights_tag()
                if tag is not None and tag != fetched:
                    session, version, state = self.link.fetch_weights()
                    fetched = f"{session}:{version}"
                    with self._lock:
                        self._pending = (version, state)
                self._stop.wait(0.01)
            except LinkError:
                self.stats["link_errors"] += 1
                self._stop.wait(self.reconnect_every_s)

    def _apply_pending_weights(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        version, state = pending
        self.policy.load_state_dict(state)
        self.collector.policy_version_tracker.version = version
        self.stats["weights_version"] = version
        self.stats["weight_updates"] += 1

    def run(self, total_frames: int = -1, on_batch: Callable[[dict], None] | None = None) -> dict:
        """Acts until ``total_frames`` (-1: until :meth:`stop`); returns the counters in ``stats``."""
        thread = threading.Thread(target=self._service_link, daemon=True, name="serl-actor-link")
        thread.start()
        try:
            for batch in self.collector:
                if len(self._backlog) == self._backlog.maxlen:
                    self.stats["dropped"] += 1
                self._backlog.append(batch.exclude("collector"))
                self.stats["frames"] += batch.numel()
                self._apply_pending_weights()
                if on_batch is not None:
                    on_batch(self.stats)
                if self._stop.is_set() or 0 <= total_frames <= self.stats["frames"]:
                    break
            self._drain(thread)
        finally:
            self._stop.set()
            thread.join(timeout=self.link.timeout_s + self.reconnect_every_s + 1)
            self.collector.shutdown()
        return self.stats

    def _drain(self, thread: threading.Thread) -> None:
        # a finished run hands its last batches over, but never waits on the link for long
        deadline = time.monotonic() + 2 * self.link.timeout_s
        while self._backlog and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
