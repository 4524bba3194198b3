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

Payloads are ``torch.save`` archives of plain tensors, loaded with ``weights_only=True`` (nothing
is unpickled). The store has no authentication, so neither side trusts what it reads: a transition
batch or a weights payload that does not decode, or is not the tensors the other side writes (keys,
shapes, dtypes, finite values), is dropped, counted and logged, and the reader carries on.
"""
from __future__ import annotations

import collections
import io
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
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
# Keys every batch a RemoteActor pushes carries, and the learner reads.
REQUIRED_TRANSITION_KEYS = (
    "action", ("next", "reward"), ("next", "done"), ("next", "terminated"), ("next", "policy_version"),
)

logger = logging.getLogger(__name__)


class LinkError(RuntimeError):
    """A call across the actor/learner link failed or missed its deadline."""


class BadPayload(ValueError):
    """An item read from the link is not what the other side writes; it is dropped, never used."""


class _Warner:
    """Logs a warning at most once per ``interval_s``, counting the ones it held back."""

    def __init__(self, interval_s: float = 10.0):
        self.interval_s = interval_s
        self._last = -math.inf
        self._held_back = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._held_back += 1
            return
        if self._held_back:
            message += f" ({self._held_back} more such warnings in the last {now - self._last:.0f} s)"
        logger.warning(message)
        self._last, self._held_back = now, 0


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


def _loads(data: bytes, keys: set[str]) -> dict:
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:
        raise BadPayload(f"does not decode as a weights-only torch archive: {type(err).__name__}: {err}") from None
    if not isinstance(payload, dict) or set(payload) != keys:
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise BadPayload(f"expected a dict with keys {sorted(keys)}, got {found}")
    return payload


def _check_tensor(name: str, value, max_bytes: int) -> torch.Tensor:
    if type(value) is not torch.Tensor or value.layout != torch.strided or value.device.type != "cpu":
        raise BadPayload(f"{name!r} is {type(value).__name__}, not a dense CPU tensor")
    # a stride-0 view of a small storage can claim any size; copying it would exhaust memory
    if value.numel() * value.element_size() > max_bytes:
        raise BadPayload(f"{name!r} claims shape {list(value.shape)}, more than its {max_bytes}-byte payload holds")
    if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
        raise BadPayload(f"{name!r} has non-finite values")
    return value


def _tensor_leaves(tree: dict, max_bytes: int, prefix: tuple = ()) -> dict[tuple, torch.Tensor]:
    leaves = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise BadPayload(f"key {key!r} under {prefix} is not a string")
        if isinstance(value, dict):
            leaves.update(_tensor_leaves(value, max_bytes, (*prefix, key)))
        else:
            leaves[(*prefix, key)] = _check_tensor("/".join((*prefix, key)), value, max_bytes)
    return leaves


def _schema(batch_dims: int, leaves: Mapping[tuple, torch.Tensor]) -> dict[tuple, tuple]:
    """``{key: (dtype, per-transition shape)}`` of a batch with ``batch_dims`` leading dims."""
    return {key: (value.dtype, tuple(value.shape[batch_dims:])) for key, value in leaves.items()}


def _td_schema(batch: TensorDictBase) -> dict[tuple, tuple]:
    leaves = batch.items(include_nested=True, leaves_only=True)
    return _schema(batch.batch_dims, {k if isinstance(k, tuple) else (k,): v for k, v in leaves})


def batch_to_bytes(batch: TensorDictBase) -> bytes:
    """Serialises a batch of transitions (tensors only) for the link."""
    return _dumps({"batch_size": list(batch.batch_size), "data": batch.to_dict()})


def batch_from_bytes(data: bytes, schema: Mapping[tuple, tuple] | None = None) -> TensorDict:
    """Inverse of :func:`batch_to_bytes`; raises :class:`BadPayload` for anything it did not write.

    A batch must decode to tensors only (CPU, dense, finite where floating), with the batch size as
    leading dims, and carry :data:`REQUIRED_TRANSITION_KEYS`. With ``schema`` (see
    :meth:`LearnerLink.pull`) its keys, dtypes and per-transition shapes must match it exactly.
    """
    payload = _loads(data, {"batch_size", "data"})
    batch_size = payload["batch_size"]
    if (not isinstance(batch_size, list) or not batch_size
            or not all(type(n) is int and n > 0 for n in batch_size)):
        raise BadPayload(f"batch_size must be a non-empty list of positive ints, got {batch_size!r}")
    if not isinstance(payload["data"], dict):
        raise BadPayload(f"data must be a dict of tensors, got {type(payload['data']).__name__}")
    leaves = _tensor_leaves(payload["data"], len(data))
    for key, value in leaves.items():
        if list(value.shape[: len(batch_size)]) != batch_size:
            raise BadPayload(f"{key} has shape {list(value.shape)}, not batch_size {batch_size} first")
    missing = [key for key in REQUIRED_TRANSITION_KEYS if (key if isinstance(key, tuple) else (key,)) not in leaves]
    if missing:
        raise BadPayload(f"missing keys {missing}; got {sorted(leaves)}")
    if schema is not None and (found := _schema(len(batch_size), leaves)) != schema:
        wrong = sorted(set(found.items()) ^ set(schema.items()), key=str)
        raise BadPayload(f"keys, dtypes or shapes differ from the learner's transitions: {wrong[:4]}")
    return TensorDict(payload["data"], batch_size=batch_size)


def weights_from_bytes(data: bytes, like: Mapping[str, torch.Tensor]) -> tuple[str, int, dict[str, torch.Tensor]]:
    """``(session, version, state_dict)`` of a weights payload; raises :class:`BadPayload` unless
    the state has exactly ``like``'s keys, shapes and dtypes (``like``: the actor's own
    ``policy.state_dict()``) and finite values."""
    payload = _loads(data, {"session", "version", "state"})
    session, version, state = payload["session"], payload["version"], payload["state"]
    if not isinstance(session, str) or type(version) is not int:
        raise BadPayload(f"session must be a str and version an int, got {session!r}, {version!r}")
    if not isinstance(state, dict) or set(state) != set(like):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise BadPayload(f"state must hold the policy's {len(like)} entries, got {found}")
    for name, value in state.items():
        _check_tensor(name, value, len(data))
        if value.shape != like[name].shape or value.dtype != like[name].dtype:
            raise BadPayload(
                f"{name!r} is {value.dtype}{list(value.shape)}, the policy has {like[name].dtype}{list(like[name].shape)}"
            )
    return session, version, state


class LearnerLink:
    """Learner side of the link: hosts the store the actors connect to.

    Args:
        host: address to listen on (``"0.0.0.0"`` for every interface of the GPU box).
        port: TCP port; a restarted learner binds the same port and the actors reconnect.
        timeout_s: deadline of every store call, seconds.

    Keyword Args:
        transition_example: a batch like the ones the actors push (any batch size, e.g. a short
            rollout of the actor's env and policy through a ``Collector``); every pulled batch must
            have its keys, dtypes and per-transition shapes. ``None``: the first accepted batch
            sets them.

    ``stats`` counts the batches ``received`` and ``dropped`` (with ``last_drop``, the reason).
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 29550, timeout_s: float = 10.0,
                 *, transition_example: TensorDictBase | None = None):
        _check_address(host, port, timeout_s)
        self.session = uuid.uuid4().hex
        self.timeout_s = timeout_s
        self._schema = None
        if transition_example is not None:
            self._schema = _td_schema(transition_example.exclude("collector"))
        self.stats = {"received": 0, "dropped": 0, "last_drop": None}
        self._warn = _Warner()
        try:
            self._store = dist.TCPStore(
                host, port, is_master=True, wait_for_workers=False,
                timeout=timedelta(seconds=timeout_s),
            )
        except Exception as err:
            raise LinkError(f"cannot listen on {host}:{port}: {err}") from err
        self._last_beat = None
        self._last_beat_time = None

    def publish_weights(self, policy: nn.Module, version: int) -> None:
        """Makes ``policy``'s weights the ones the actors fetch next, tagged ``version``."""
        state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        # weights first, tag second: an actor that sees the new tag always finds the new weights
        self._store.set(_WEIGHTS, _dumps({"session": self.session, "version": int(version), "state": state}))
        self._store.set(_WEIGHTS_TAG, f"{self.session}:{int(version)}")

    def pull(self, max_batches: int = 1000) -> list[TensorDict]:
        """Pops up to ``max_batches`` transition batches the actors pushed (non-blocking).

        An item that is not a batch of transitions like the others (see :func:`batch_from_bytes`)
        is dropped, counted in ``stats`` and logged; the rest are returned.
        """
        batches = []
        for _ in range(min(int(self._store.queue_len(_TRANSITIONS)), max_batches)):
            data = self._store.queue_pop(_TRANSITIONS, block=False)
            try:
                batch = batch_from_bytes(data, self._schema)
            except BadPayload as err:
                self.stats["dropped"] += 1
                self.stats["last_drop"] = str(err)
                self._warn(f"dropped a transition batch from the link ({self.stats['dropped']} so far): {err}")
                continue
            if self._schema is None:
                self._schema = _td_schema(batch)
            self.stats["received"] += 1
            batches.append(batch)
        return batches

    def actor_seen_within(self, seconds: float) -> bool:
        """Whether an actor sent a heartbeat in the last ``seconds`` (by the learner's clock)."""
        # a heartbeat is any change of the key's bytes: nothing written there can fail to parse
        beat = self._store.get(_BEATS) if self._store.check([_BEATS]) else None
        now = time.monotonic()
        if beat != self._last_beat:
            self._last_beat, self._last_beat_time = beat, now
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
        self._beat_id, self._beats = uuid.uuid4().hex, 0

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
        self._beats += 1
        beat = f"{self._beat_id}:{self._beats}"
        self._call("heartbeat", lambda s: s.set(_BEATS, beat))

    def weights_tag(self) -> str | None:
        """``"session:version"`` of the newest published weights, ``None`` before the first."""
        def get(s):
            # undecodable bytes still make a tag: a new one only makes the actor fetch (and check) weights
            return s.get(_WEIGHTS_TAG).decode(errors="replace") if s.check([_WEIGHTS_TAG]) else None

        return self._call("weights_tag", get)

    def fetch_weights(self, like: Mapping[str, torch.Tensor]) -> tuple[str, int, dict[str, torch.Tensor]]:
        """Returns ``(session, version, state_dict)`` of the newest published weights.

        Raises :class:`BadPayload` unless they fit ``like`` (see :func:`weights_from_bytes`).
        """
        return weights_from_bytes(self._call("fetch_weights", lambda s: s.get(_WEIGHTS)), like)


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
        self._weights_like = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._link_failure: Exception | None = None
        self._warn = _Warner()
        self.stats = {
            "frames": 0, "sent": 0, "dropped": 0, "link_errors": 0, "weights_version": -1, "weight_updates": 0,
            "bad_weights": 0,
        }

    def _service_link(self) -> None:
        try:
            self._link_loop()
        except Exception as err:
            # a bug, not a network fault: the control loop must not go on with a dead link
            logger.exception("the actor's link thread failed; the actor stops")
            self._link_failure = err
            self._stop.set()

    def _link_loop(self) -> None:
        fetched = None  # tag of the newest weights handed to the control loop, or found bad
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
                    try:
                        session, version, state = self.link.fetch_weights(self._weights_like)
                    except BadPayload as err:
                        fetched = tag  # not fetched again until the learner publishes anew
                        self.stats["bad_weights"] += 1
                        self._warn(f"dropped weights {tag!r} from the link, acting on with version "
                                   f"{self.stats['weights_version']}: {err}")
                    else:
                        fetched = f"{session}:{version}"
                        with self._lock:
                            self._pending = (version, state)
                self._stop.wait(0.01)
            except LinkError as err:
                self.stats["link_errors"] += 1
                self._warn(f"actor link: {err} ({self.stats['link_errors']} link errors so far); retrying")
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
                self._raise_link_failure()
                if self._stop.is_set() or 0 <= total_frames <= self.stats["frames"]:
                    break
            self._drain(thread)
            self._raise_link_failure()
        finally:
            self._stop.set()
            thread.join(timeout=self.link.timeout_s + self.reconnect_every_s + 1)
            self.collector.shutdown()
        return self.stats

    def _raise_link_failure(self) -> None:
        if self._link_failure is not None:
            raise LinkError("the actor's link thread failed (see the log)") from self._link_failure

    def _drain(self, thread: threading.Thread) -> None:
        # a finished run hands its last batches over, but never waits on the link for long
        deadline = time.monotonic() + 2 * self.link.timeout_s
        while self._backlog and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
