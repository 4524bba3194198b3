"""Typed run configurations, overridable from the command line.

A recipe declares one dataclass (fields with defaults that run on the simulation) and calls
:func:`parse_config`. Every field becomes a ``--name value`` option; fields of nested
dataclasses are reached with dots (``--sac.utd_ratio 4``, ``--env.pixels true``).
``--help`` lists every field with its type and default.

The learner defaults are SERL's (critic ensemble 10, subset-min over 2, LayerNorm, hidden
[256, 256], tau 0.005, target entropy -|A|/2, temperature init 0.01, no entropy backup,
batch 256, critic:actor update ratio 8 for state / 4 for pixels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass
class EnvConfig:
    """Simulated pick-cube task (``torchrl_serl.envs.sim``)."""

    task: str = "panda"
    """``panda`` (PandaPickCube) or ``piper`` (PiperPickCube)."""
    pixels: bool = False
    image_size: int = 128
    reward_type: str = "dense"
    max_episode_steps: int = 100
    control_hz: float = 10.0
    action_scale_m: float = 0.1
    relative_pose: bool = False
    """SERL's relative frame (pixel tasks and real arms; RelativeFrame, then QuatToEuler):
    ``observation`` = tool position and roll/pitch/yaw relative to the tool pose at reset, tool
    velocity in that frame, gripper (10 entries), and actions in that frame. Scripted demos need false."""


@dataclass
class SACConfig:
    """SERL/RLPD learner hyperparameters (state defaults)."""

    num_critics: int = 10
    critic_subsample: int = 2
    hidden: tuple[int, ...] = (256, 256)
    layer_norm: bool = True
    discount: float = 0.99
    tau: float = 0.005
    target_entropy: float | None = None
    """``None`` means SERL's -|A|/2."""
    alpha_init: float = 0.01
    backup_entropy: bool = False
    batch_size: int = 256
    """Transitions per critic update; a learner step samples ``batch_size * utd_ratio`` at once."""
    utd_ratio: int = 8
    """Critic updates per actor/temperature update (and per collected env step)."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    std_max: float = 10.0
    """Upper bound of the actor's pre-tanh std: SERL's ``Policy`` default; its launcher's SAC,
    DrQ and VICE agents pass 5."""
    actor_init: str = "torch"
    """The actor's weight init: ``"torch"`` (``nn.Linear``'s default) or ``"xavier"`` (SERL's
    ``default_init``, Xavier-uniform with zero biases). The critic ensemble is always Xavier."""
    idle_optimizer_steps: bool = False
    """SERL's optax update: every optimizer steps on every update, the actor and temperature on
    the critic-only updates with zero gradients (Adam's momentum still moves them). Off: only the
    critic's optimizer steps there. See :class:`~torchrl_serl.training.updater.SACUpdater`."""
    actor_on_whole_sample: bool = False
    """SERL's state learner: the actor and temperature update once per learner step on the whole
    ``batch_size * utd_ratio`` sample, after all ``utd_ratio`` critic updates. Off: on the last
    ``batch_size`` minibatch, fused with the last critic update (cheaper; SERL's pixel learner)."""


@dataclass
class DrQConfig(SACConfig):
    """SERL's DrQ (pixels) learner: SAC defaults except discount 0.96 and critic:actor ratio 4."""

    discount: float = 0.96
    utd_ratio: int = 4
    encoder: str = "resnet10"
    """``resnet10`` (SERL: frozen, pretrained), ``small`` (4-layer conv, trained) or ``mobilenet``."""
    pretrained_path: str = ""
    """Local trunk weights (SERL ``resnet10_params.pkl`` or a torch state_dict); never downloaded."""
    trust_pickle: bool = False
    """Allow ``pretrained_path`` to be SERL's ``.pkl`` (unpickling runs any code the file holds)."""
    augment_pad: int = 4
    """Random-shift padding in px (0 disables augmentation)."""
    feature_views: int = 0
    """0: SERL's exact path (the frozen trunk runs on every augmented image of every update).
    K >= 1: encode each frame once when collected, as K views (view 0 unshifted, K-1 shifted by
    up to ``augment_pad`` px); the learner draws one cached view per sample and trains only the
    head (frozen trunk only; an option that changes SERL's augmentation, see docs/results.md)."""
    channels_last: bool = True
    """Channels-last convolutions in the trunk (the same math; faster on CPUs and GPUs)."""
    trunk_bf16: bool = False
    """The frozen trunk computes in bfloat16 wherever it runs (acting, encoding frames, the exact
    path's learner): ~2x faster on a CPU with AVX-512 BF16, features within about 1 percent of float32's;
    ~10x slower where bfloat16 is emulated (AVX2-only CPUs; a warning says so, torchrl_serl/precision.py).
    An option that changes SERL's numbers, not yet shown not to hurt learning (benchmarks/README.md)."""
    trunk_compile: bool = False
    """Cached path (``feature_views >= 1``): the env-side trunk that encodes each frame (actor and
    evaluation envs) runs under ``torch.compile``, compiled at the first reset in the process that
    steps the env. The same math; on a CPU it pays off with ``trunk_bf16`` (benchmarks/README.md)."""


@dataclass
class RobotConfig:
    """Real arm selection for the arm recipes; ``real=False`` runs the simulated twin."""

    real: bool = False
    address: str = ""
    """Franka: robot (or robot-server) host; Piper: CAN channel such as ``can0``."""
    camera: str = "realsense"
    """``realsense``, ``opencv`` or ``test_pattern``."""
    camera_ids: str = ""
    """``front,wrist`` camera serials (RealSense) or device indices (OpenCV); empty: defaults."""
    realtime: bool = True
    """Franka: enforce libfranka's real-time kernel (``false`` only for simulators such as franky-sim)."""
    reward_classifier: str = ""
    """A classifier saved by ``recipes/train_reward_classifier.py``: it judges success from the
    cameras on every step (reward 1 and the episode ends on success, as SERL's real envs), in the
    process that drives the arm; empty: no learned reward."""


@dataclass
class RunConfig:
    """What every training recipe shares: budget, logging, checkpoints, evaluation."""

    seed: int = 0
    total_steps: int = 100_000
    """Environment steps to collect."""
    random_steps: int = 1_000
    """Uniform-random actions before the policy acts (SERL ``random_steps``)."""
    training_starts: int = 1_000
    """Transitions in the buffer before the first update."""
    buffer_size: int = 1_000_000
    device: str = "cpu"
    logdir: str = "runs"
    exp_name: str = ""
    """Run directory name under ``logdir``; empty: ``<recipe>_seed<seed>``."""
    log_every: int = 1_000
    eval_every: int = 10_000
    eval_episodes: int = 10
    video: bool = False
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 2
    resume: bool = False
    """Continue from the newest valid checkpoint of the run directory."""
    compile: bool = False
    """``torch.compile`` the learner update (CPU: 1.4-1.7x after 20-150 s of compilation)."""
    cudagraphs: bool = False
    """On a CUDA device: record each whole learner update as one CUDA graph and replay it
    (with or without ``compile``)."""
    bf16: bool = False
    """bfloat16 autocast for the losses (weights and optimizer state stay float32); only where the
    device has native bf16 kernels (a warning otherwise: emulated bf16 is ~10x slower, torchrl_serl/precision.py)."""
    wandb: bool = False
    wandb_mode: str = "offline"
    """``online`` or ``offline`` (offline needs no network; sync later with ``wandb sync``)."""
    wandb_project: str = "torchrl-serl"
    progress: bool = True


ROLES = ("local", "learner", "actor")


@dataclass
class ActorLearnerConfig:
    """Where the actor and the learner run: one machine, or two linked by ZeroMQ + CURVE
    (``torchrl_serl.training.distributed``; docs/distributed.md)."""

    role: str = "local"
    """``local`` (actor process + learner here), ``learner`` (GPU box) or ``actor`` (robot PC)."""
    host: str = "127.0.0.1"
    """Learner address: where the actor connects; where the learner listens (``0.0.0.0``: all)."""
    port: int = 29550
    secret_file: str = ""
    """File holding the link's shared secret (``python -m torchrl_serl.security`` makes one); empty:
    ``$TORCHRL_SERL_SECRET``; neither: ``--host`` must be loopback."""
    timeout_s: float = 10.0
    """Deadline of every call the actor makes across the link."""
    weights_dtype: str = "float32"
    """``--role learner``: ``bfloat16`` sends the weights rounded to bfloat16, half the bytes; the
    actors then act with the rounded weights."""
    max_learner_silence_s: float = 5.0
    """``--role actor``: once the learner has not answered for this long, take no new step or reset
    (a real arm holds its last target) until it answers again; 0: never hold (simulation only)."""


def _leaf_fields(config: Any, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """Flatten a dataclass instance into ``(dotted_name, type, default, doc)`` rows.

    Walks the instance, not the class, so a recipe that overrides a nested default (e.g.
    ``EnvConfig(task="piper")``) shows that default in ``--help``.
    """
    cls = type(config)
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(_leaf_fields(value, name + "."))
        else:
            rows.append((name, hints[f.name], value, docs.get(f.name, "")))
    return rows


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after the field), read from the source."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _converter(tp: Any, name: str):
    """A str -> value parser for the annotation ``tp`` (bool, int, float, str, tuples, Optional)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"config field {name!r}: only Optional[X] unions are supported, got {tp}")
        convert = _converter(inner[0], name)

        def optional(text: str):
            return None if text.lower() in ("none", "null", "") else convert(text)

        return optional
    if origin in (tuple, list):
        item = _converter(args[0] if args else str, name)

        def sequence(text: str):
            parts = [p for p in text.replace(" ", ",").split(",") if p]
            values = [item(p) for p in parts]
            return tuple(values) if origin is tuple else values

        return sequence
    if tp is bool:

        def boolean(text: str) -> bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise argparse.ArgumentTypeError(f"--{name}: expected true/false, got {text!r}")

        return boolean
    if tp in (int, float, str):

        def scalar(text: str):
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--{name}: expected {tp.__name__}, got {text!r}"
                ) from None

        return scalar
    raise TypeError(f"config field {name!r}: unsupported type {tp}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--dotted.name`` option per leaf field of ``cls``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        defaults = cls()
    except TypeError as err:
        raise TypeError(f"every field of {cls.__name__} needs a default so the recipe runs as is: {err}") from None
    for name, tp, default, doc in _leaf_fields(defaults):
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        # a bare boolean flag (``--resume``) means true; ``--resume false`` also works
        flag = {"nargs": "?", "const": True} if tp is bool else {}
        parser.add_argument(
            f"--{name}",
            dest=name,
            **flag,
            type=_converter(tp, name),
            # only the options given on the command line override the dataclass defaults
            default=argparse.SUPPRESS,
            metavar=_type_name(tp).upper(),
            # argparse %-formats help strings: a literal % in a docstring must not break --help
            help=(f"{doc} (default: {shown})" if doc else f"(default: {shown})").replace("%", "%%"),
        )
    return parser


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """Return a copy of ``config`` with ``{"a.b": value}`` overrides applied."""
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if not any(f.name == head for f in dataclasses.fields(config)):
            raise KeyError(f"unknown config field {dotted!r} for {type(config).__name__}")
        if rest:
            child = apply_overrides(getattr(config, head), {rest: value})
            config = dataclasses.replace(config, **{head: child})
        else:
            config = dataclasses.replace(config, **{head: value})
    return config


def parse_config(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Build ``cls()`` and apply ``--field value`` overrides from ``argv`` (default ``sys.argv``)."""
    parser = build_parser(cls, description)
    namespace = parser.parse_args(argv)
    return apply_overrides(cls(), vars(namespace))


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly nested dict of a config (for logs and checkpoint metadata)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


__all__ = [
    "DrQConfig",
    "EnvConfig",
    "SACConfig",
    "RobotConfig",
    "RunConfig",
    "build_parser",
    "apply_overrides",
    "parse_config",
    "config_to_dict",
]
