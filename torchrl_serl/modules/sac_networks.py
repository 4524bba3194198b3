"""Builders for SERL's SAC actor, critic ensemble and grasp critic as TensorDict modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal

from torchrl_serl.modules.actors import TanhGaussianActorNet
from torchrl_serl.modules.critics import EnsembleQValue
from torchrl_serl.modules.mlp import LayerNormMLP


GRASP_ACTIONS = (-1.0, 0.0, 1.0)  # index 0 open, 1 stay, 2 close (gripper command, + closes)


def grasp_action_to_index(gripper_command: torch.Tensor) -> torch.Tensor:
    """Gripper command in ``{-1, 0, 1}`` (rounded) ``[*B]`` -> discrete index ``{0, 1, 2}`` ``[*B]``."""
    return gripper_command.round().clamp(-1, 1).long() + 1


def grasp_index_to_action(index: torch.Tensor) -> torch.Tensor:
    """Discrete index ``{0, 1, 2}`` ``[*B]`` -> gripper command ``{-1., 0., 1.}`` ``[*B]``."""
    return index.to(torch.float32) - 1


class _StopGradient(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


def _features(in_keys, encoder, stop_encoder_grad: bool):
    """Modules that put the MLP's input in place, and the keys the MLP reads."""
    if encoder is None:
        return [], list(in_keys)
    if not isinstance(encoder, TensorDictModuleBase):
        raise TypeError(
            f"encoder must be a TensorDictModuleBase writing 'embedding', got {type(encoder).__name__}"
        )
    if "embedding" not in encoder.out_keys:
        raise ValueError(f"encoder must write 'embedding', its out_keys are {encoder.out_keys}")
    if not stop_encoder_grad:
        return [encoder], ["embedding"]
    # SERL's actor sees the shared encoder with stop_gradient: the critic alone trains it.
    stop = TensorDictModule(_StopGradient(), in_keys=["embedding"], out_keys=["embedding_sg"])
    return [encoder, stop], ["embedding_sg"]


def make_sac_actor(
    obs_dim: int,
    action_dim: int,
    hidden: Sequence[int] = (256, 256),
    in_keys: Sequence[str] = ("observation",),
    encoder: TensorDictModuleBase | None = None,
    stop_encoder_grad: bool = True,
    layer_norm: bool = True,
    activation: type[nn.Module] = nn.Tanh,
    std_parametrization: str = "exp",
    std_min: float = 1e-5,
    std_max: float = 10.0,
    weight_init: str = "torch",
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """SERL's tanh-squashed Gaussian policy as a :class:`~torchrl.modules.ProbabilisticActor`.

    Args:
        obs_dim: size of the MLP input: the concatenated ``in_keys`` or, with ``encoder``, the
            size of ``embedding``.
        action_dim: ``A``; actions lie in ``[-1, 1]``.
        in_keys: observation keys read when there is no encoder.
        encoder: optional module mapping the tensordict to ``embedding`` ``[*B, E]``.
        stop_encoder_grad: with an encoder, stop the actor's gradient into it (SERL/DrQ: the
            critic trains the shared encoder). BC trains the encoder through the actor: pass
            ``False``.
        device: where the networks and the action bounds live. On CUDA the bounds are CUDA
            tensors, so building the distribution copies nothing from the host (a CUDA graph
            cannot record such a copy).
        others: see :class:`~torchrl_serl.modules.TanhGaussianActorNet`.

    Writes ``loc``, ``scale`` ``[*B, A]`` and ``action`` ``[*B, A]``.
    """
    pre, mlp_keys = _features(in_keys, encoder, stop_encoder_grad)
    net = TanhGaussianActorNet(
        obs_dim,
        action_dim,
        hidden=hidden,
        layer_norm=layer_norm,
        activation=activation,
        std_parametrization=std_parametrization,
        std_min=std_min,
        std_max=std_max,
        weight_init=weight_init,
    )
    head = TensorDictModule(net, in_keys=mlp_keys, out_keys=["loc", "scale"])
    module = TensorDictSequential(*pre, head) if pre else head
    bounds = {"low": -1.0, "high": 1.0}
    if device is not None and torch.device(device).type != "cpu":
        bounds = {k: torch.tensor(v, device=device) for k, v in bounds.items()}
    actor = ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        spec=Bounded(-1.0, 1.0, shape=(action_dim,), device=device),
        distribution_class=TanhNormal,
        distribution_kwargs=bounds,
        return_log_prob=False,
    )
    return actor if device is None else actor.to(device)


def make_sac_critic(
    obs_dim: int,
    action_dim: int,
    num_critics: int = 10,
    hidden: Sequence[int] = (256, 256),
    layer_norm: bool = True,
    in_keys: Sequence[str] = ("observation", "action"),
    encoder: TensorDictModuleBase | None = None,
    activation=torch.tanh,
) -> TensorDictModuleBase:
    """SERL's critic ensemble as a TensorDict module writing ``state_action_value [*B, N, 1]``.

    All N critics run in one batched computation (:class:`~torchrl_serl.modules.EnsembleQValue`).

    Args:
        obs_dim: size of the observation features (the concatenated non-action ``in_keys``,
            or the encoder's ``embedding`` size).
        action_dim: ``A``.
        num_critics: ensemble size N (SERL: 10).
        in_keys: keys concatenated into the critic input; the last one is the action.
        encoder: optional module writing ``embedding``; the critic then reads
            ``("embedding", in_keys[-1])`` and its loss trains the encoder.
    """
    in_keys = list(in_keys)
    if len(in_keys) < 2:
        raise ValueError(f"in_keys must name observation key(s) then the action key, got {in_keys}")
    pre = []
    if encoder is not None:
        pre, obs_keys = _features(in_keys[:-1], encoder, stop_encoder_grad=False)
        in_keys = [*obs_keys, in_keys[-1]]
    net = EnsembleQValue(
        obs_dim + action_dim,
        num_critics=num_critics,
        hidden=hidden,
        layer_norm=layer_norm,
        activation=activation,
    )
    head = TensorDictModule(net, in_keys=in_keys, out_keys=["state_action_value"])
    return TensorDictSequential(*pre, head) if pre else head


def make_grasp_critic(
    obs_dim: int,
    hidden: Sequence[int] = (256, 256),
    in_keys: Sequence[str] = ("observation",),
    encoder: TensorDictModuleBase | None = None,
    stop_encoder_grad: bool = True,
    layer_norm: bool = True,
    activation: type[nn.Module] = nn.Tanh,
) -> TensorDictModuleBase:
    """HIL-SERL's grasp critic: ``Q_g(s) [*B, 3]`` over gripper open / stay / close.

    Writes ``grasp_q_values``; train it with :class:`~torchrl_serl.objectives.GraspCriticLoss`.
    With a shared ``encoder`` its gradient is stopped by default (the arm critic trains it).
    """
    pre, mlp_keys = _features(in_keys, encoder, stop_encoder_grad)
    net = LayerNormMLP(obs_dim, len(GRASP_ACTIONS), hidden=hidden, activation=activation, layer_norm=layer_norm)
    head = TensorDictModule(net, in_keys=mlp_keys, out_keys=["grasp_q_values"])
    return TensorDictSequential(*pre, head) if pre else head


class _GreedyGraspCommand(nn.Module):
    def forward(self, arm_action: torch.Tensor, grasp_q_values: torch.Tensor) -> torch.Tensor:
        command = grasp_index_to_action(grasp_q_values.argmax(-1, keepdim=True))
        return torch.cat([arm_action, command.to(arm_action.dtype)], -1)


def greedy_grasp_command(action_key: str = "action") -> TensorDictModule:
    """HIL-SERL's hybrid action: the arm action ``[*B, A - 1]`` the actor wrote to ``action_key``,
    followed by the gripper command of the grasp critic's best value, ``argmax_b Q_g(s, b) - 1`` in
    ``{-1, 0, 1}``, written back as the full action ``[*B, A]``. Put it after the actor and the
    grasp critic in the acting policy."""
    return TensorDictModule(_GreedyGraspCommand(), in_keys=[action_key, "grasp_q_values"], out_keys=[action_key])
