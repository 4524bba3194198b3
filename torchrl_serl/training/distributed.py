"""Actor and learner on different machines, linked by ZeroMQ with CURVE authentication.

SERL runs the actor on the robot PC and the learner on a GPU box, linked by ``agentlace`` (ZeroMQ).
This link runs on ZeroMQ too (pyzmq), with the robot server's authentication (one shared secret ->
CURVE keys, :mod:`torchrl_serl.security`). The alternatives and why they lose (see
``docs/distributed.md``): TorchRL's ``RPCCollector``/``DistributedCollector`` and
``torch.distributed.rpc`` join a process group of fixed world size that a dead rank breaks (a learner
restart would take the actor down), and have no authentication; a ``torch.distributed.TCPStore``
(this link's previous engine) lets anyone who reaches its port read and write every key;
Ray would put the robot PC into a Ray cluster whose head dies with the learner's machine.

- The learner (:class:`LearnerLink`) binds one ROUTER socket and serves any number of actors from a
  background thread, so a learner busy in a long update still answers at once. It publishes
  ``(session, version, weights)``, and accepts transition batches into a bounded inbox that
  :meth:`LearnerLink.pull` drains; it never waits on an actor.
- The actor (:class:`RemoteActor`) steps a TorchRL :class:`~torchrl.collectors.Collector` in its
  main loop and never waits on the network; a background thread sends batches, fetches newer weights
  and reconnects when the learner goes away. Each batch carries ``(actor id, sequence number)`` and
  stays in the actor's bounded backlog until the learner acknowledges it; the learner acknowledges a
  resent batch again without keeping it twice. So nothing the learner acknowledged is lost by the
  link, and nothing is kept twice.
- Every call across the link has a deadline (``timeout_s``): a dead, hung or refusing learner raises
  :class:`LinkError` instead of blocking.

With a secret (``secret=`` or ``$TORCHRL_SERL_SECRET``) the link is CURVE-authenticated and
encrypted: a peer without the secret fails the handshake and nothing it sends reaches this code,
and the actor only takes weights from a learner that holds the secret. Without one both sides
refuse any address but loopback, and warn. The learner drops messages over ``max_message_bytes``
(ZMQ_MAXMSGSIZE) and anything that is not this protocol, and neither side trusts what it decodes:
payloads are ``torch.save`` archives of plain tensors loaded with ``weights_only=True`` (nothing is
unpickled), and a transition batch or a weights payload that is not the tensors the other side
writes (keys, shapes, dtypes, finite values) is refused, counted and logged.

Wire protocol (ZMQ multipart messages; the ROUTER adds the actor's connection identity)::

    actor -> learner: PROTOCOL, kind, request id (8 bytes), actor id (16 bytes), *body
    learner -> actor: PROTOCOL, kind, request id, newest weights tag ("session:version" or b""), *body
    kind  b"hello":   body ()                       -> (max_message_bytes (8 bytes, big-endian),)
          b"push":    (sequence number (8 bytes, big-endian), batch)
                                                    -> (b"ok" | b"busy" | b"bad", reason)
          b"weights": (tag the actor holds)         -> (the weights, or b"" if it holds them)

Every answer carries the newest weights tag, so the actor fetches weights when they change (at
most once per collected batch: it applies them between batches) and otherwise says hello every
``weights_poll_s`` (its heartbeat).
"""
from __future__ import annotations

import collections
import hashlib
import io
import ipaddress
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import torch
import zmq
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, ExplorationType, Transform
from zmq.utils.monitor import recv_monitor_message

from .checkpoint import terminate_as_interrupt
from .frame_codec import CODECS, FrameCodecError, compress_frames, decompress_frames
from ..security import CurveServerAuth, curve_client_options, load_secret, require_secret_off_loopback

# The version of the weights that produced each transition (TorchRL's ``track_policy_version``).
POLICY_VERSION_KEY = ("next", "policy_version")
# the learner's number for the actor a pulled batch came from (EpisodeTracker's trajectory key)
ACTOR_KEY = ("collector", "traj_ids")
# Keys every batch a RemoteActor pushes carries, and the learner reads.
REQUIRED_TRANSITION_KEYS = ("action", ("next", "reward"), ("next", "done"), ("next", "terminated"), POLICY_VERSION_KEY)
PROTOCOL = b"torchrl-serl-link/1"
HELLO, PUSH, WEIGHTS = b"hello", b"push", b"weights"
OK, BUSY, BAD = b"ok", b"busy", b"bad"
# Transition batches are a few KB (state) to a few MB (pixels); a larger frame is not an actor's.
MAX_MESSAGE_BYTES = 64 * 2**20
# The actor bounds what it takes from the learner too (weights of a pixel policy are tens of MB).
MAX_WEIGHTS_BYTES = 2**30
# Actors whose sequence numbers the learner remembers (the least recently heard is forgotten first).
MAX_ACTORS = 1024
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

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


def _endpoint(host: str, port: int) -> tuple[str, bool]:
    """``(ZMQ endpoint, is IPv6)`` of ``host:port``."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}.")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port must be in [0, 65535], got {port}.")
    try:
        ipv6 = ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:  # a host or interface name
        ipv6 = False
    return (f"tcp://[{host.strip('[]')}]:{int(port)}" if ipv6 else f"tcp://{host}:{int(port)}"), ipv6


# the robot server's rule without a secret (loopback only, with a warning), worded for this link
_NO_SECRET_RULE = dict(
    link="actor/learner link", risk="feed the learner or, through the weights, drive the actor",
    local_risk="feed the learner or serve weights to the actor", secret_option="--secret_file",
    fallback="use 127.0.0.1 (e.g. through an SSH tunnel)",
)


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


def batch_to_bytes(batch: TensorDictBase, image_codec: str | None = None) -> bytes:
    """Serialises a batch of transitions (tensors only) for the link; with ``image_codec``
    (``"png"`` lossless, ``"jpeg"``) the cameras of a ``[T]`` batch travel compressed, each distinct
    frame once (:mod:`~torchrl_serl.training.frame_codec`)."""
    data, frames = batch.to_dict(), {}
    if image_codec is not None:
        if batch.batch_dims != 1:
            raise ValueError(f"compressed frames need a [T] batch, got batch size {list(batch.batch_size)}")
        data, frames = compress_frames(data, image_codec)
    return _dumps({"batch_size": list(batch.batch_size), "data": data, "frames": frames})


def batch_from_bytes(data: bytes, schema: Mapping[tuple, tuple] | None = None) -> TensorDict:
    """Inverse of :func:`batch_to_bytes`; raises :class:`BadPayload` for anything it did not write.

    A batch must decode to tensors only (CPU, dense, finite where floating), with the batch size as
    leading dims, and carry :data:`REQUIRED_TRANSITION_KEYS`. With ``schema`` (see
    :meth:`LearnerLink.pull`) its keys, dtypes and per-transition shapes must match it exactly.
    """
    payload = _loads(data, {"batch_size", "data", "frames"})
    batch_size = payload["batch_size"]
    if (not isinstance(batch_size, list) or not batch_size
            or not all(type(n) is int and n > 0 for n in batch_size)):
        raise BadPayload(f"batch_size must be a non-empty list of positive ints, got {batch_size!r}")
    if not isinstance(payload["data"], dict):
        raise BadPayload(f"data must be a dict of tensors, got {type(payload['data']).__name__}")
    leaves = _tensor_leaves(payload["data"], len(data))
    if payload["frames"]:  # compressed cameras: decoded (at the shapes the schema expects) into dense tensors
        if len(batch_size) != 1:
            raise BadPayload(f"compressed frames need a [T] batch, got batch_size {batch_size}")
        frame_shape = {k[0]: shape for k, (_, shape) in (schema or {}).items() if len(k) == 1}
        try:
            payload["data"] = decompress_frames(payload["data"], payload["frames"], batch_size[0], frame_shape)
        except FrameCodecError as err:
            raise BadPayload(str(err)) from None
        leaves = _tensor_leaves(payload["data"], math.inf)  # the decoder allocated them: no stride tricks
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


def _frozen_names(policy: nn.Module) -> set[str]:
    return {name for name, p in policy.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trained_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``policy.state_dict()`` that training changes: all but the parameters that do
    not require gradients (a frozen pretrained trunk, ~29 MB for DrQ's ResNet-10, which the actor
    builds itself: :func:`frozen_digest` checks that it built the learner's)."""
    frozen = _frozen_names(policy)
    return {k: v.detach().cpu() for k, v in policy.state_dict().items() if k not in frozen}


def frozen_digest(policy: nn.Module) -> str:
    """SHA-256 of ``policy``'s frozen parameters (names, dtypes, shapes, values); ``""`` if none."""
    frozen = _frozen_names(policy)
    if not frozen:
        return ""
    digest = hashlib.sha256()
    for name, value in sorted((k, v) for k, v in policy.state_dict().items() if k in frozen):
        digest.update(f"{name}:{value.dtype}:{list(value.shape)}".encode())
        # flat, in logical order: the same digest whatever the memory format (channels-last trunks)
        value = value.detach().cpu().contiguous().reshape(-1)
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def weights_from_bytes(data: bytes, like: Mapping[str, torch.Tensor],
                       frozen: str | None = None) -> tuple[str, int, dict[str, torch.Tensor]]:
    """``(session, version, state_dict)`` of a weights payload; raises :class:`BadPayload` unless
    the state has exactly ``like``'s keys, shapes and dtypes (``like``: the actor's own
    :func:`trained_state`; bfloat16 for float32 is accepted and cast back, see ``LearnerLink``'s
    ``weights_dtype``) and finite values, and (with ``frozen``, the actor's :func:`frozen_digest`)
    the learner's frozen parameters are the actor's."""
    payload = _loads(data, {"session", "version", "state", "frozen"})
    session, version, state = payload["session"], payload["version"], payload["state"]
    if not isinstance(session, str) or type(version) is not int or not isinstance(payload["frozen"], str):
        raise BadPayload(f"session and frozen must be str and version an int, got {session!r}, "
                         f"{payload['frozen']!r}, {version!r}")
    if frozen is not None and payload["frozen"] != frozen:
        raise BadPayload("the learner's frozen parameters (a pretrained trunk) are not this actor's: "
                         "build both from the same weights (--drq.pretrained_path)")
    if not isinstance(state, dict) or set(state) != set(like):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise BadPayload(f"state must hold the policy's {len(like)} entries, got {found}")
    for name, value in list(state.items()):
        _check_tensor(name, value, len(data))
        rounded = value.dtype == torch.bfloat16 and like[name].dtype == torch.float32
        if value.shape != like[name].shape or (value.dtype != like[name].dtype and not rounded):
            raise BadPayload(
                f"{name!r} is {value.dtype}{list(value.shape)}, the policy has {like[name].dtype}{list(like[name].shape)}"
            )
        if rounded:
            state[name] = value.float()
    return session, version, state


WEIGHTS_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def weights_dtype_named(name: str) -> torch.dtype | None:
    """``LearnerLink``'s ``weights_dtype`` from its name (``--weights_dtype``)."""
    if name not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {name!r}")
    return WEIGHTS_DTYPES[name]


class LearnerLink:
    """Learner side of the link: serves any number of actors from a background thread.

    Args:
        host: address to listen on (``"0.0.0.0"``: every interface of the GPU box; needs a secret).
        port: TCP port; a restarted learner binds the same port and the actors reconnect. ``0``
            picks a free one (see :attr:`port`).

    Keyword Args:
        secret: the shared secret (:func:`torchrl_serl.security.load_secret`: this argument, else
            ``$TORCHRL_SERL_SECRET``). With one, only actors holding it complete the CURVE handshake;
            without one only loopback ``host`` is allowed (with a warning).
        transition_example: a batch like the ones the actors push (any batch size, e.g. a short
            rollout of the actor's env and policy through a ``Collector``); every accepted batch must
            have its keys, dtypes and per-transition shapes. ``None``: the first accepted batch sets them.
        max_message_bytes: a larger message frame disconnects its sender (ZMQ_MAXMSGSIZE). Actors
            learn it when they connect and refuse to send a larger batch themselves.
        max_inbox: accepted batches held for :meth:`pull`; beyond it actors are told to retry later.
        weights_dtype: ``torch.bfloat16`` publishes the float32 weights rounded to bfloat16, half
            the bytes (DrQ: 4.9 instead of 9.7 MB per publication); the actors act with the rounded
            weights (8 mantissa bits: ~0.4% relative). ``None``: as they are.

    In simulation the learner holds its actors to its update ratio with :meth:`hold_ahead` (as
    :class:`~torchrl_serl.training.background_collector.BackgroundCollector` does its actor process):
    beyond the limit pushes are answered busy, the actors keep their batches, and an actor with
    ``RemoteActor(max_unacked=...)`` stops stepping until the learner takes more.

    ``stats`` counts the batches ``received`` (acknowledged), ``duplicates`` (resent after a lost
    acknowledgement, acknowledged again, kept once), ``dropped`` (refused as malformed, with
    ``last_drop``, the reason), ``malformed`` messages (not this protocol; no answer) and
    ``refused_handshakes`` (peers without the secret, or speaking something else).

    Raises:
        ValueError: a bad address, a non-loopback ``host`` without a secret, a secret too short.
        LinkError: the address cannot be bound (e.g. the port is taken).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 29550, *, secret: str | bytes | None = None,
                 transition_example: TensorDictBase | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_inbox: int = 1000, weights_dtype: torch.dtype | None = None):
        endpoint, ipv6 = _endpoint(host, port)
        if max_message_bytes < 1024 or max_inbox < 1:
            raise ValueError(f"max_message_bytes must be >= 1024 and max_inbox >= 1, got {max_message_bytes} "
                             f"and {max_inbox}.")
        if weights_dtype not in (None, torch.bfloat16):
            raise ValueError(f"weights_dtype must be None or torch.bfloat16, got {weights_dtype!r}")
        self.weights_dtype = weights_dtype
        secret = load_secret(secret)
        require_secret_off_loopback(endpoint, secret, refused="let actors connect on", **_NO_SECRET_RULE)
        self.session = uuid.uuid4().hex
        self.max_message_bytes = int(max_message_bytes)
        self._schema = None
        if transition_example is not None:
            self._schema = _td_schema(transition_example.exclude("collector"))
        self.stats = {"received": 0, "duplicates": 0, "dropped": 0, "last_drop": None, "malformed": 0,
                      "refused_handshakes": 0}
        self._inbox = collections.deque()
        self._max_inbox = int(max_inbox)
        self._frames = 0  # transitions accepted
        self._drained = 0  # transitions handed out by pull()
        self._frame_limit: int | None = None  # accepted transitions beyond which pushes are answered busy
        # actor id -> [last seq, last heard, actor number]
        self._actors: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self._actors_numbered = 0
        self._actors_lock = threading.Lock()
        self._weights = (b"", b"")  # (tag, payload) the actors fetch
        self._frozen: tuple[nn.Module, str] | None = None  # (policy, frozen_digest) of the last publication
        self._warn = _Warner()
        # Its own context: libzmq runs one authenticator (ZAP handler) per context.
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._auth = None if secret is None else CurveServerAuth(self._ctx, self._sock, secret)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IPV6, ipv6)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        # An actor has one request in flight; one that never reads its answers must not pile them up here.
        self._sock.setsockopt(zmq.SNDHWM, 16)
        self._monitor = self._sock.get_monitor_socket(_HANDSHAKE_FAILED)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as err:
            self._close_sockets()
            self._close_context()
            raise LinkError(f"cannot listen on {host}:{port}: {err}") from err
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self._stop = threading.Event()
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="serl-learner-link")
        self._thread.start()

    def publish_weights(self, policy: nn.Module, version: int) -> None:
        """Makes ``policy``'s weights the ones the actors fetch next, tagged ``version``: all but its
        frozen parameters (:func:`trained_state`)."""
        state = trained_state(policy)
        if self.weights_dtype is not None:
            state = {k: v.to(self.weights_dtype) if v.dtype == torch.float32 else v for k, v in state.items()}
        if self._frozen is None or self._frozen[0] is not policy:  # frozen: computed once per policy
            self._frozen = (policy, frozen_digest(policy))
        payload = _dumps({"session": self.session, "version": int(version), "state": state, "frozen": self._frozen[1]})
        self._weights = (f"{self.session}:{int(version)}".encode(), payload)  # one assignment: never torn

    def pull(self, max_batches: int = 1000) -> list[TensorDict]:
        """Takes up to ``max_batches`` acknowledged transition batches, oldest first (non-blocking).
        Each carries its actor's number (0, 1, ... in order of first contact) under
        ``("collector", "traj_ids")``: one actor's batches are its env's consecutive steps, so an
        :class:`~torchrl_serl.training.logging.EpisodeTracker` follows each actor's episodes.

        Raises:
            LinkError: the link's thread failed (a bug; it is logged): no actor is heard any more.
        """
        if self._failure is not None:
            raise LinkError("the learner's link thread failed (see the log)") from self._failure
        batches = []
        while self._inbox and len(batches) < max_batches:
            batches.append(self._inbox.popleft())
        self._drained += sum(b.numel() for b in batches)
        return batches

    def set_frame_limit(self, frames: int | None) -> None:
        """Accept no batch once the transitions accepted reach ``frames`` (``None``: no limit); the
        actors' pushes are answered busy and they keep them. The last batch accepted may pass the
        limit by its own size."""
        self._frame_limit = None if frames is None else int(frames)

    def hold_ahead(self, frames: int) -> None:
        """Accept at most ``frames`` transitions more than :meth:`pull` has handed out: called after
        the learner has trained on every pulled batch, it holds the actors that far ahead of the
        learner (simulation; real arms run without a limit)."""
        self.set_frame_limit(self._drained + frames)

    @property
    def pending(self) -> int:
        """Acknowledged batches not taken yet."""
        return len(self._inbox)

    def drain(self, timeout_s: float = 0.0) -> list[TensorDict]:
        """:meth:`pull`, waiting up to ``timeout_s`` for a first batch (the interface of
        :class:`~torchrl_serl.training.background_collector.BackgroundCollector`)."""
        deadline = time.monotonic() + timeout_s
        while not self._inbox and time.monotonic() < deadline and self._failure is None:
            time.sleep(0.005)
        return self.pull()

    def actors_seen_within(self, seconds: float) -> int:
        """Actors heard from in the last ``seconds`` (any message of theirs counts)."""
        now = time.monotonic()
        with self._actors_lock:
            return sum(now - heard <= seconds for _, heard, _ in self._actors.values())

    def close(self) -> None:
        """Stops answering (the actors retry, and hold after their ``max_learner_silence_s``);
        :meth:`pull` still returns what was acknowledged. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._close_context()

    def _close_context(self) -> None:
        if self._auth is not None:
            self._auth.close()
        self._ctx.term()

    def _close_sockets(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(50))
                while self._monitor in ready and self._monitor.poll(0):
                    recv_monitor_message(self._monitor)
                    self.stats["refused_handshakes"] += 1
                # a bounded burst, then the stop flag is looked at again
                for _ in range(100 if self._sock in ready else 0):
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        reply = self._answer(frames[1:])
                    except Exception as err:  # a message that breaks a check is its sender's problem
                        self.stats["malformed"] += 1
                        self._warn(f"learner link: dropped a message that failed to parse: {type(err).__name__}: {err}")
                        continue
                    if reply is None:
                        self.stats["malformed"] += 1
                        self._warn("learner link: dropped a message that is not the actor/learner protocol "
                                   f"({self.stats['malformed']} so far)")
                        continue
                    # a ROUTER drops (never blocks on) a reply to a peer that is gone or not reading
                    self._sock.send_multipart([frames[0], *reply], flags=zmq.NOBLOCK, copy=False)
        except Exception as err:
            logger.exception("the learner's link thread failed; pull() raises from now on")
            self._failure = err
        finally:
            self._close_sockets()

    def _answer(self, frames: list[bytes]) -> list[bytes] | None:
        """The reply to one request, ``None`` for a message that is not one."""
        if len(frames) < 4 or frames[0] != PROTOCOL or len(frames[2]) != 8 or len(frames[3]) != 16:
            return None
        kind, request_id, actor_id, body = frames[1], frames[2], frames[3], frames[4:]
        if not ((kind == HELLO and not body) or (kind == PUSH and len(body) == 2 and len(body[0]) == 8)
                or (kind == WEIGHTS and len(body) == 1)):
            return None
        entry = self._heard(actor_id)
        tag, payload = self._weights
        if kind == HELLO:
            answer = [self.max_message_bytes.to_bytes(8, "big")]
        elif kind == PUSH:
            answer = self._accept(entry, int.from_bytes(body[0], "big"), body[1])
        else:
            answer = [b"" if body[0] == tag else payload]
        return [PROTOCOL, kind, request_id, tag, *answer]

    def _heard(self, actor_id: bytes) -> list:
        with self._actors_lock:
            entry = self._actors.get(actor_id)
            if entry is None:
                entry = self._actors[actor_id] = [-1, 0.0, self._actors_numbered]
                self._actors_numbered += 1
            entry[1] = time.monotonic()
            self._actors.move_to_end(actor_id)
            if len(self._actors) > MAX_ACTORS:
                self._actors.popitem(last=False)
        return entry

    def _accept(self, entry: list, seq: int, payload: bytes) -> list[bytes]:
        if seq <= entry[0]:  # kept already: its acknowledgement was lost, the actor sent it again
            self.stats["duplicates"] += 1
            return [OK, b""]
        limit = self._frame_limit
        if limit is not None and self._frames >= limit:
            return [BUSY, f"the learner holds its actors to its update ratio ({self._frames} transitions "
                          f"taken, limit {limit})".encode()]
        if len(self._inbox) >= self._max_inbox:
            return [BUSY, f"the learner holds {len(self._inbox)} batches it has not taken yet".encode()]
        try:
            batch = batch_from_bytes(payload, self._schema)
        except BadPayload as err:
            self.stats["dropped"] += 1
            self.stats["last_drop"] = str(err)
            self._warn(f"refused a transition batch from the link ({self.stats['dropped']} so far): {err}")
            return [BAD, str(err).encode()]
        if self._schema is None:
            self._schema = _td_schema(batch)
        entry[0] = seq
        # which actor's stream (an EpisodeTracker follows each); "collector" keys are never stored
        batch.set(ACTOR_KEY, torch.full(batch.shape, entry[2], dtype=torch.int64))
        self._frames += batch.numel()
        self._inbox.append(batch)
        self.stats["received"] += 1
        return [OK, b""]


class ActorLink:
    """Actor side of the link: requests to a :class:`LearnerLink`, each with a deadline.

    Args:
        host, port: the learner's address.
        timeout_s: deadline of every call [s], connection and CURVE handshake included.

    Keyword Args:
        secret: the shared secret (:func:`torchrl_serl.security.load_secret`: this argument, else
            ``$TORCHRL_SERL_SECRET``). With one, the actor only talks to a learner holding it; without
            one only a loopback ``host`` is allowed (with a warning).
        max_message_bytes: a larger answer (weights) disconnects the learner.
        image_codec: ``"png"`` (lossless) or ``"jpeg"``: pushed batches carry their cameras
            compressed, each distinct frame once; ``None``: raw.

    Each call raises :class:`LinkError` when the learner is unreachable, dead, refuses this actor's
    secret or does not answer within ``timeout_s``; the socket is then rebuilt by the next call, so
    a late answer can never be taken for the next one. ``stats`` counts the ``bytes_sent`` and
    ``bytes_received`` (message frames; CURVE and ZMTP add ~30 bytes a frame). Not thread-safe: one
    thread makes the calls.
    """

    def __init__(self, host: str, port: int, timeout_s: float = 5.0, *, secret: str | bytes | None = None,
                 max_message_bytes: int = MAX_WEIGHTS_BYTES, image_codec: str | None = None):
        self.endpoint, self._ipv6 = _endpoint(host, port)
        if image_codec not in (None, *CODECS):
            raise ValueError(f"image_codec must be one of {CODECS} or None, got {image_codec!r}")
        self.image_codec = image_codec
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}.")
        secret = load_secret(secret)
        require_secret_off_loopback(self.endpoint, secret, refused="connect to a learner at", **_NO_SECRET_RULE)
        self.timeout_s = float(timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self._curve = {} if secret is None else curve_client_options(secret)
        self.actor_id = uuid.uuid4().bytes
        self.learner_tag = ""  # of the newest weights, as the learner's last answer said
        self.learner_max_message_bytes: int | None = None
        self.stats = {"bytes_sent": 0, "bytes_received": 0}
        self._ctx = zmq.Context.instance()
        self._sock = self._monitor = None
        self._requests = 0

    @property
    def connected(self) -> bool:
        """Whether the last call got its answer (the next one reuses the connection)."""
        return self._sock is not None and self.learner_max_message_bytes is not None

    def _open(self) -> None:
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IPV6, self._ipv6)
        # queue nothing before the handshake: POLLOUT then means "connected and admitted"
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        for option, value in self._curve.items():
            self._sock.setsockopt(option, value)
        self._monitor = self._sock.get_monitor_socket(_HANDSHAKE_FAILED)
        self._sock.connect(self.endpoint)

    def close(self) -> None:
        """Drops the connection; the next call opens a new one."""
        if self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = self._monitor = None
        self.learner_max_message_bytes = None

    def _fail(self, what: str, message: str) -> LinkError:
        refused = self._monitor.poll(0)
        self.close()
        if refused:
            message = (f"learner {self.endpoint} refused the handshake: this actor's secret differs from the "
                       "learner's, or only one side has one")
        return LinkError(f"{what}: {message}")

    def _request(self, what: str, kind: bytes, *body: bytes) -> list[bytes]:
        try:
            return self._exchange(what, kind, *body)
        except zmq.ZMQError as err:  # the socket, not the learner, failed: a fresh one may work
            raise self._fail(what, f"ZMQ error talking to learner {self.endpoint}: {err}") from err

    def _exchange(self, what: str, kind: bytes, *body: bytes) -> list[bytes]:
        if self._sock is None:
            self._open()
        deadline = time.monotonic() + self.timeout_s
        self._requests += 1
        request_id = self._requests.to_bytes(8, "big")
        if not self._sock.poll(self.timeout_s * 1000, zmq.POLLOUT):
            raise self._fail(what, f"cannot reach learner {self.endpoint} within {self.timeout_s} s "
                                   "(down or unreachable)")
        frames = [PROTOCOL, kind, request_id, self.actor_id, *body]
        self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        self.stats["bytes_sent"] += sum(map(len, frames))
        while True:
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0 or not self._sock.poll(left_ms, zmq.POLLIN):
                raise self._fail(what, f"learner {self.endpoint} missed the {self.timeout_s} s deadline")
            reply = self._sock.recv_multipart()
            self.stats["bytes_received"] += sum(map(len, reply))
            # anything else is a late answer to a request of a previous socket's life, or not an answer
            if len(reply) >= 4 and reply[:3] == [PROTOCOL, kind, request_id]:
                self.learner_tag = reply[3].decode(errors="replace")
                return reply[4:]

    def connect(self) -> None:
        """Opens a fresh connection and says hello (the learner is there and admits this actor)."""
        self.close()
        self._hello("connect")

    def heartbeat(self) -> None:
        """Says hello on the current connection: the learner hears this actor, and it hears of newer weights."""
        self._hello("heartbeat")

    def _hello(self, what: str) -> None:
        answer = self._request(what, HELLO)
        if len(answer) != 1 or len(answer[0]) != 8:
            raise self._fail(what, f"learner {self.endpoint} answered hello with something else")
        self.learner_max_message_bytes = int.from_bytes(answer[0], "big")

    def push(self, batch: TensorDictBase, seq: int) -> bool:
        """Sends batch number ``seq`` of this actor (numbers only grow); ``True`` once the learner
        acknowledged it (also for a batch it had already), ``False`` if the learner's inbox is full.

        Raises:
            BadPayload: the learner refused the batch as malformed, or it is larger than the
                learner's message limit (sending it again would not help).
            LinkError: no acknowledgement within the deadline.
        """
        if not self.connected:
            self.connect()
        data = batch_to_bytes(batch, self.image_codec)
        if len(data) + 128 > self.learner_max_message_bytes:
            raise BadPayload(f"a batch of {batch.numel()} transitions is {len(data)} bytes, more than the learner's "
                             f"max_message_bytes ({self.learner_max_message_bytes}): send fewer frames per batch")
        answer = self._request("push", PUSH, int(seq).to_bytes(8, "big"), data)
        status = answer[0] if len(answer) == 2 else None
        if status == BAD:
            raise BadPayload(f"the learner refused the batch: {answer[1].decode(errors='replace')}")
        if status not in (OK, BUSY):
            raise self._fail("push", f"learner {self.endpoint} answered push with something else")
        return status == OK

    def fetch_weights(self, have: str = "") -> tuple[str, bytes] | None:
        """``(tag, payload)`` of the newest published weights (decode with :func:`weights_from_bytes`);
        ``None`` before the first publication, or when their tag is ``have``."""
        if not self.connected:
            self.connect()
        answer = self._request("fetch_weights", WEIGHTS, have.encode())
        if len(answer) != 1:
            raise self._fail("fetch_weights", f"learner {self.endpoint} answered with something else")
        return (self.learner_tag, answer[0]) if self.learner_tag and answer[0] else None


class RemoteActor:
    """Acts on the robot PC with the learner's latest weights, whatever the link does.

    The main loop is a TorchRL :class:`~torchrl.collectors.Collector`; it only hands batches to a
    bounded backlog and applies weights a background thread has already fetched, so a slow,
    restarting or dead learner never stalls the control loop. Every frame carries the learner's
    weight version under ``("next", "policy_version")`` (-1 before the first weights arrive).
    A batch leaves the backlog when the learner acknowledges it; while the learner is away the
    backlog fills, and beyond ``max_backlog`` the oldest unacknowledged batch is dropped (counted).

    An arm never moves on for long without its learner: once the learner has not answered for
    ``max_learner_silence_s`` (it crashed, restarts, the network is down, it refuses this actor's
    secret), the actor takes no new env step or reset (a real arm holds its last target) until the
    learner answers again, then acts on from the same observation. Stale-policy motion is bounded
    by ``max_learner_silence_s`` plus one control step. The hold covers random actions too.

    Args:
        create_env_fn: returns the environment (the robot or its simulation).
        policy: module with the learner's architecture; its weights are replaced as they arrive.

    Keyword Args:
        host, port: the learner's :class:`LearnerLink` address.
        secret: the shared secret (see :class:`ActorLink`).
        frames_per_batch: env steps per pushed batch.
        timeout_s: deadline of every call to the learner.
        reconnect_every_s: pause between reconnection attempts while the learner is away.
        weights_poll_s: longest time between two requests (the actor's heartbeat). New weights are
            fetched as soon as an answer announces them, unless the last ones fetched wait for the
            end of the current batch: at most one weights payload crosses the link per batch.
        max_backlog: unacknowledged batches kept; the oldest are dropped beyond it.
        init_random_frames: frames taken with a uniformly random policy first.
        exploration_type: action sampling of the policy.
        seed: environment seed.
        image_codec: ``"png"`` (lossless) or ``"jpeg"``: the cameras travel compressed, each
            distinct frame once (see :class:`ActorLink`); ``None``: raw.
        postproc: applied to each batch before it is sent (e.g. dropping what the actor computed
            only to act, such as cached trunk features the learner computes itself).
        max_learner_silence_s: longest time without an answer from the learner before the actor
            holds (above); the clock starts when :meth:`run` starts. ``None``: act on regardless
            (a simulation that should keep collecting).
        max_unacked: simulation paced by its learner: take no new env step while this many batches
            wait for the learner's acknowledgement. With a learner that holds its actors to its
            update ratio (:meth:`LearnerLink.hold_ahead`) the actor then steps at the learner's
            pace. ``None``: never (a real arm: its control rate sets the pace, and beyond
            ``max_backlog`` the oldest batches are dropped).

    ``stats`` counts ``frames``, batches ``acked`` by the learner, ``dropped`` from a full backlog,
    ``rejected`` by the learner as malformed, ``link_errors``, ``weight_updates``, ``bad_weights``
    and ``holds`` (times the actor held for a silent learner), and holds the ``weights_version``
    acted with, ``holding`` (holding now), ``held_s`` (seconds held in all), ``pacing`` (waiting
    for acknowledgements now, ``max_unacked``), ``paced_s`` (seconds waited for them in all) and the link's ``bytes_sent``/``bytes_received``.
    """

    def __init__(
        self,
        create_env_fn: Callable[[], EnvBase],
        policy: nn.Module,
        *,
        host: str,
        port: int,
        secret: str | bytes | None = None,
        frames_per_batch: int = 10,
        timeout_s: float = 5.0,
        reconnect_every_s: float = 1.0,
        weights_poll_s: float = 0.1,
        max_backlog: int = 1000,
        init_random_frames: int = 0,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        seed: int | None = None,
        image_codec: str | None = None,
        postproc: Callable[[TensorDictBase], TensorDictBase] | None = None,
        max_learner_silence_s: float | None = 5.0,
        max_unacked: int | None = None,
    ):
        if frames_per_batch < 1:
            raise ValueError(f"frames_per_batch must be >= 1, got {frames_per_batch}.")
        if max_learner_silence_s is not None and not max_learner_silence_s > 0:
            raise ValueError(f"max_learner_silence_s must be > 0 (None: never hold), got {max_learner_silence_s}")
        if max_unacked is not None and max_unacked < 1:
            raise ValueError(f"max_unacked must be >= 1 (None: never wait), got {max_unacked}")
        self.max_learner_silence_s = max_learner_silence_s
        self.max_unacked = max_unacked
        self._acked = threading.Event()
        self._last_answer = math.inf  # no hold before run() (the collector resets the env once when built)
        self._answered = threading.Event()
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog}.")
        # before the env: the collector resets it once when built, through the gate below
        self._backlog: collections.deque[tuple[int, TensorDictBase]] = collections.deque(maxlen=max_backlog)
        self._lock = threading.Lock()
        self.link = ActorLink(host, port, timeout_s, secret=secret, image_codec=image_codec)
        self.frames_per_batch = frames_per_batch
        self.policy = policy
        self.reconnect_every_s = reconnect_every_s
        self.weights_poll_s = weights_poll_s
        env = create_env_fn()
        if seed is not None:
            env.set_seed(seed)
        if max_learner_silence_s is not None or max_unacked is not None:
            env = env.append_transform(_HoldBeforeActing(self._hold_before_acting))
        self.collector = Collector(
            env,
            policy,
            frames_per_batch=frames_per_batch,
            total_frames=-1,
            init_random_frames=init_random_frames,
            exploration_type=exploration_type,
            track_policy_version=True,
            auto_register_policy_transforms=False,
            postproc=postproc,
        )
        self.collector.policy_version_tracker.version = -1
        self._next_seq = 0
        self._pending = None  # (version, state) fetched by the link thread
        self._weights_like = trained_state(policy)
        self._frozen = frozen_digest(policy)
        self._stop_acting = threading.Event()
        self._stop_link = threading.Event()
        self._link_failure: Exception | None = None
        self._warn = _Warner()
        self.stats = {
            "frames": 0, "acked": 0, "dropped": 0, "rejected": 0, "link_errors": 0, "weights_version": -1,
            "weight_updates": 0, "bad_weights": 0, "bytes_sent": 0, "bytes_received": 0,
            "holds": 0, "holding": False, "held_s": 0.0, "pacing": False, "paced_s": 0.0,
        }

    def _service_link(self) -> None:
        try:
            self._link_loop()
        except Exception as err:
            # a bug, not a network fault: the control loop must not go on with a dead link
            logger.exception("the actor's link thread failed; the actor stops")
            self._link_failure = err
            self._stop_acting.set()
        finally:
            self.link.close()

    def _link_loop(self) -> None:
        held = ""  # tag of the newest weights handed to the control loop, or found bad
        polled = -math.inf
        while not self._stop_link.is_set():
            try:
                if not self.link.connected:
                    self.link.connect()
                learner_busy = not self._send_backlog()
                due = time.monotonic() - polled >= self.weights_poll_s
                with self._lock:
                    waiting = self._pending is not None
                if not waiting and (due or self.link.learner_tag != held):
                    polled = time.monotonic()
                    fetched = self.link.fetch_weights(have=held)
                    if fetched is not None:
                        held = fetched[0]  # a bad payload is not fetched again until the learner publishes anew
                        self._take_weights(*fetched)
                elif due:
                    polled = time.monotonic()
                    self.link.heartbeat()
                self._last_answer = time.monotonic()  # every call above was answered
                self._answered.set()
                self._stop_link.wait(0.05 if learner_busy else 0.01)
            except LinkError as err:
                self.stats["link_errors"] += 1
                self._warn(f"actor link: {err} ({self.stats['link_errors']} link errors so far); retrying")
                self._stop_link.wait(self.reconnect_every_s)
            finally:
                self.stats["bytes_sent"] = self.link.stats["bytes_sent"]
                self.stats["bytes_received"] = self.link.stats["bytes_received"]

    def _send_backlog(self) -> bool:
        """Sends the backlog oldest first until it is empty (``True``) or the learner is busy (``False``)."""
        while True:
            with self._lock:
                if not self._backlog:
                    return True
                seq, batch = self._backlog[0]
            try:
                if not self.link.push(batch, seq):
                    return False
                self.stats["acked"] += 1
            except BadPayload as err:
                self.stats["rejected"] += 1
                self._warn(f"actor link: batch {seq} dropped: {err}")
            with self._lock:
                # the control loop may have pushed it out of a full backlog meanwhile
                if self._backlog and self._backlog[0][0] == seq:
                    self._backlog.popleft()
            self._acked.set()

    def _take_weights(self, tag: str, payload: bytes) -> None:
        try:
            _, version, state = weights_from_bytes(payload, self._weights_like, self._frozen)
        except BadPayload as err:
            self.stats["bad_weights"] += 1
            self._warn(f"dropped weights {tag!r} from the link, acting on with version "
                       f"{self.stats['weights_version']}: {err}")
            return
        with self._lock:
            self._pending = (version, state)

    def _hold_before_acting(self) -> None:
        """Called before every env step and reset (no new action reaches the env while it waits)."""
        if self.max_learner_silence_s is not None:
            self._hold_while_learner_silent()
        if self.max_unacked is not None:
            self._wait_for_acknowledgements()

    def _wait_for_acknowledgements(self) -> None:
        """Returns once fewer than ``max_unacked`` batches wait for the learner, or raises on :meth:`stop`."""
        start = None
        try:
            while True:
                with self._lock:
                    if len(self._backlog) < self.max_unacked:
                        break
                if self._stop_acting.is_set():
                    raise _StoppedWhileHolding
                if start is None:
                    start = time.monotonic()
                    self.stats["pacing"] = True
                self._acked.wait(0.05)
                self._acked.clear()
        finally:
            if start is not None:
                self.stats["pacing"] = False
                self.stats["paced_s"] += time.monotonic() - start

    def _hold_while_learner_silent(self) -> None:
        """Returns at once while the learner answers; otherwise waits until it answers again or
        :meth:`stop`."""
        silent = time.monotonic() - self._last_answer
        if silent <= self.max_learner_silence_s:
            return
        self.stats["holds"] += 1
        self.stats["holding"] = True
        logger.warning("no answer from the learner for %.1f s (limit %.1f s): holding, no new actions until it "
                       "answers", silent, self.max_learner_silence_s)
        start = time.monotonic()
        try:
            while time.monotonic() - self._last_answer > self.max_learner_silence_s:
                if self._stop_acting.is_set():
                    raise _StoppedWhileHolding
                self._answered.wait(0.05)
                self._answered.clear()
        finally:
            self.stats["holding"] = False
            self.stats["held_s"] += time.monotonic() - start
        logger.warning("the learner answers again after %.1f s on hold: acting on", time.monotonic() - start)

    def _apply_pending_weights(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        version, state = pending
        self.policy.load_state_dict(state, strict=False)  # the frozen parameters stay as built
        self.collector.policy_version_tracker.version = version
        self.stats["weights_version"] = version
        self.stats["weight_updates"] += 1

    def run(self, total_frames: int = -1, on_batch: Callable[[dict], None] | None = None) -> dict:
        """Acts until ``total_frames`` (-1: until :meth:`stop`); returns the counters in ``stats``."""
        thread = threading.Thread(target=self._service_link, daemon=True, name="serl-actor-link")
        self._last_answer = time.monotonic()
        thread.start()
        try:
            self._act(total_frames, on_batch)
            self._drain(thread)
            self._raise_link_failure()
        finally:
            self._stop_acting.set()
            self._stop_link.set()
            thread.join(timeout=self.link.timeout_s + self.reconnect_every_s + 1)
            self.collector.shutdown()
        return self.stats

    def _act(self, total_frames: int, on_batch: Callable[[dict], None] | None) -> None:
        try:
            for batch in self.collector:
                with self._lock:
                    if len(self._backlog) == self._backlog.maxlen:
                        self.stats["dropped"] += 1
                    self._backlog.append((self._next_seq, batch.exclude("collector")))
                    self._next_seq += 1
                self.stats["frames"] += batch.numel()
                self._apply_pending_weights()
                if on_batch is not None:
                    on_batch(self.stats)
                self._raise_link_failure()
                if self._stop_acting.is_set() or 0 <= total_frames <= self.stats["frames"]:
                    break
        except _StoppedWhileHolding:
            pass  # stop() while holding: the partial batch is dropped, the backlog still goes out

    def _raise_link_failure(self) -> None:
        if self._link_failure is not None:
            raise LinkError("the actor's link thread failed (see the log)") from self._link_failure

    def _drain(self, thread: threading.Thread) -> None:
        # a finished run hands its last batches over, but never waits on the link for long
        deadline = time.monotonic() + 2 * self.link.timeout_s
        while self._backlog and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        """Stops acting; :meth:`run` then hands the backlog over (for at most twice ``timeout_s``) and returns."""
        self._stop_acting.set()


class _StoppedWhileHolding(Exception):
    """:meth:`RemoteActor.stop` while the actor held for a silent learner."""


class _HoldBeforeActing(Transform):
    """Calls ``hold()`` before every step and reset of the env it wraps (:class:`RemoteActor`'s gate)."""

    def __init__(self, hold: Callable[[], None]):
        super().__init__()
        self._hold = hold

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._hold()
        return tensordict

    def _reset_env_preprocess(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        self._hold()
        return tensordict


def act_until_stopped(actor: RemoteActor, total_frames: int, report_every: int = 1000) -> dict:
    """The ``--role actor`` main loop: :meth:`RemoteActor.run` until ``total_frames``, Ctrl-C or
    SIGTERM, printing the stats about every ``report_every`` frames and at the end; returns them."""
    frames_per_batch = actor.frames_per_batch
    with terminate_as_interrupt():
        try:
            stats = actor.run(
                total_frames=total_frames,
                on_batch=lambda s: print(s, flush=True) if s["frames"] % report_every < frames_per_batch else None,
            )
        except KeyboardInterrupt:
            stats = actor.stats
    print(f"actor done: {stats}", flush=True)
    return stats
