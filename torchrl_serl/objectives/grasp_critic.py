"""HIL-SERL's grasp critic: a discrete gripper head trained by double DQN beside the arm SAC."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, _reduce

from torchrl_serl.modules.sac_networks import GRASP_ACTIONS, grasp_action_to_index


class GraspCriticLoss(LossModule):
    r"""Double-DQN loss for HIL-SERL's discrete gripper critic.

    The arm is driven by SAC on the first ``A - 1`` action dims; the last dim is a discrete
    gripper command (open / stay / close = -1 / 0 / +1) scored by ``Q_g(s) [*B, 3]``:

    .. math::
        y = r - p_{grasp} + \gamma (1 - d)\, \bar Q_g(s', \arg\max_b Q_g(s', b)), \qquad
        \mathcal{L} = \mathrm{mean}_B\,(Q_g(s, a_g) - y)^2

    with :math:`\bar Q_g` the target network (update it with
    :class:`~torchrl.objectives.SoftUpdate`) and :math:`p_{grasp} \ge 0` the grasp penalty read
    from the batch: HIL-SERL charges it on the transitions whose gripper command toggles the gripper,
    :class:`~torchrl_serl.envs.transforms.GripperPenalty` with ``judge="command"`` writes it
    (HIL-SERL stores it negated and adds it).

    Args:
        grasp_critic: module writing ``grasp_q_values`` ``[*B, 3]`` (see
            :func:`torchrl_serl.modules.make_grasp_critic`).

    Keyword Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Input keys: the critic's ``in_keys`` (and their ``("next", ...)`` twins), ``action``
    ``[*B, A]`` (gripper command last), ``("next", "reward")``, ``("next", "grasp_penalty")``
    ``[*B, 1]`` (``>= 0``), ``("next", "terminated")`` (only termination stops bootstrapping). Change them
    with :meth:`set_keys`. Use :meth:`make_value_estimator` to set ``gamma`` (default 0.99).

    Example:
        >>> from torchrl_serl.modules import make_grasp_critic
        >>> loss = GraspCriticLoss(make_grasp_critic(3, hidden=(16,)))
        >>> loss.make_value_estimator(gamma=0.9)
        >>> b = 4
        >>> data = TensorDict(observation=torch.randn(b, 3), action=torch.tensor([[0.2, 1.0]]).expand(b, 2),
        ...     next=TensorDict(observation=torch.randn(b, 3), reward=torch.zeros(b, 1),
        ...                     grasp_penalty=torch.full((b, 1), 0.02),
        ...                     terminated=torch.zeros(b, 1, dtype=torch.bool)),
        ...     batch_size=[b])
        >>> loss(data)["loss_grasp_critic"].backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss.

        Attributes:
            action: full action, the gripper command in the last dim.
            action_value: the critic's output ``[*B, 3]``.
            reward, grasp_penalty, terminated: read under ``"next"``.
        """

        action: NestedKey = "action"
        action_value: NestedKey = "grasp_q_values"
        reward: NestedKey = "reward"
        grasp_penalty: NestedKey = "grasp_penalty"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.TD0
    out_keys = ["loss_grasp_critic", "grasp_q_mean"]

    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(self, grasp_critic: TensorDictModule, *, reduction: str | None = None) -> None:
        super().__init__()
        self.convert_to_functional(grasp_critic, "value_network", create_target_params=True)
        self.reduction = reduction or "mean"
        self.register_buffer("discount", torch.tensor(0.99))

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams) -> None:
        """Only the TD(0) target is supported; ``gamma`` is the discount."""
        if value_type not in (None, ValueEstimators.TD0):
            raise NotImplementedError(f"GraspCriticLoss supports TD0 only, got {value_type}")
        gamma = hyperparams.pop("gamma", None)
        if hyperparams:
            raise TypeError(f"unexpected value estimator arguments {list(hyperparams)}")
        if gamma is not None:
            if not 0 <= gamma <= 1:
                raise ValueError(f"gamma must be in [0, 1], got {gamma}")
            self.discount.fill_(gamma)

    @property
    def in_keys(self):
        obs = list(self.value_network.in_keys)
        keys = [self.tensor_keys.action, *obs, *[("next", k) for k in obs]]
        keys += [("next", getattr(self.tensor_keys, k)) for k in ("reward", "grasp_penalty", "terminated")]
        return keys

    def _q(self, params, tensordict: TensorDictBase) -> Tensor:
        with params.to_module(self.value_network, preserve_module_state=False):
            td = self.value_network(tensordict.select(*self.value_network.in_keys, strict=False))
        q = td.get(self.tensor_keys.action_value)
        if q.shape[-1] != len(GRASP_ACTIONS):
            raise ValueError(f"grasp critic must output [*B, 3] values, got {tuple(q.shape)}")
        return q

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if not torch.compiler.is_compiling():
            missing = [k for k in self.in_keys if k not in tensordict.keys(True)]
            if missing:
                raise KeyError(f"GraspCriticLoss: batch is missing keys {missing}")
        nxt = tensordict.get("next")
        with torch.no_grad():
            best_next = self._q(self.value_network_params, nxt).argmax(-1, keepdim=True)
            next_q = self._q(self.target_value_network_params, nxt).gather(-1, best_next)
            reward = nxt.get(self.tensor_keys.reward) - nxt.get(self.tensor_keys.grasp_penalty)
            not_terminal = (~nxt.get(self.tensor_keys.terminated)).to(reward.dtype)
            target = reward + self.discount * not_terminal * next_q
        index = grasp_action_to_index(tensordict.get(self.tensor_keys.action)[..., -1:])
        q = self._q(self.value_network_params, tensordict).gather(-1, index)
        loss = _reduce((q - target).pow(2).squeeze(-1), self.reduction)
        return TensorDict(loss_grasp_critic=loss, grasp_q_mean=q.detach().mean(), batch_size=[])
