"""SERL/RLPD soft actor-critic: critic ensemble, subsampled-min target, split updates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.sac import SACLoss, compute_rsample_log_prob
from torchrl.objectives.utils import ValueEstimators

from torchrl_serl.modules.critics import EnsembleQValue

ACTOR_REDUCTIONS = ("mean", "min")
TEMPERATURE_LOSSES = ("lagrange", "log")


def _tracing_or_capturing() -> bool:
    """True inside ``torch.compile`` tracing or a CUDA-graph capture, where a data-dependent
    check would break the graph or be refused."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()


def _all_finite(x: Tensor) -> Tensor:
    """0-d bool: every entry finite, from the tensor's min and max (NaN propagates into both, an
    inf is one of them): one reduction pass, no copy (float16 features are checked without
    converting them)."""
    if x.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=x.device)
    low, high = torch.aminmax(x)
    return torch.isfinite(low) & torch.isfinite(high)


def non_finite_entries(tensordict: TensorDictBase, keys) -> list:
    """The floating-point entries among ``keys`` holding NaN or inf (one device sync for all)."""
    floats = [k for k in keys if tensordict.get(k).is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([_all_finite(tensordict.get(k)) for k in floats]).tolist()
    return [k for k, ok in zip(floats, finite) if not ok]


class SERLSACLoss(SACLoss):
    r"""SAC as SERL/RLPD run it, as a TorchRL :class:`~torchrl.objectives.LossModule`.

    Reuses :class:`torchrl.objectives.SACLoss` (functional parameters, targets for
    :class:`~torchrl.objectives.SoftUpdate`, ``log_alpha``, keys, value estimator) and replaces its
    critic/actor/temperature math with SERL's (``serl_launcher/agents/continuous/sac.py``):

    * critic: :math:`y = r + \gamma (1 - d)\,\min_{j \in S} \bar Q_j(s', a')`,
      :math:`a' \sim \pi(s')`, with :math:`S` a random subset of ``critic_subset`` (M) of the N
      target critics, drawn without replacement at every update (RLPD/REDQ). With
      ``backup_entropy=True`` the backup gets :math:`- \gamma (1 - d) \alpha \log\pi(a'|s')`
      (default off, as SERL). ``loss_qvalue = mean_B sum_N (Q_i(s, a) - y)^2``.
      Only the M chosen target critics are evaluated.
    * actor: ``loss_actor = mean_B(alpha * log pi(a|s) - agg_N Q_i(s, a))`` with ``agg`` the
      ensemble ``"mean"`` (SERL's ``policy_loss_fn``: ``predicted_qs.mean(axis=0)``) or ``"min"``
      (classic SAC). Critic parameters are detached.
    * temperature: ``"lagrange"`` (SERL's ``GeqLagrangeMultiplier``):
      ``loss_alpha = alpha * (H - H_target)`` with ``H = -mean(log pi)``; ``"log"``: TorchRL's
      ``-log_alpha * (log pi + H_target)``. ``alpha = exp(log_alpha)``, init 0.01; the
      gradient of the ``"lagrange"`` form w.r.t. ``log_alpha`` equals SERL's softplus
      parametrisation's to first order for small alpha.

    ``loss_qvalue``, ``loss_actor`` and ``loss_alpha`` have gradients on disjoint parameter
    sets (critic, actor, ``log_alpha``). For high update-to-data training call
    :meth:`loss_critic` alone (it never samples the actor with gradients and never touches
    ``log_alpha``), then :meth:`loss_actor_alpha` once. Nothing is written into the input
    tensordict (no ``td_error``), which keeps ``torch.compile`` from recompiling.

    Args:
        actor_network: a probabilistic actor writing ``action`` with ``TanhNormal`` (see
            :func:`torchrl_serl.modules.make_sac_actor`).
        qvalue_network: a module writing ``state_action_value`` ``[*B, N, 1]`` for all N
            critics at once (see :func:`torchrl_serl.modules.make_sac_critic`). When it holds an
            :class:`~torchrl_serl.modules.EnsembleQValue`, target critics outside the drawn subset
            are skipped; otherwise all N are evaluated and the subset is gathered.

    Keyword Args:
        num_critics: N; read from the :class:`EnsembleQValue` when there is one.
        critic_subset: M, ``1 <= M <= N`` (SERL: 2). ``None`` takes the min over all N.
        backup_entropy: entropy term in the target (SERL: ``False``).
        actor_reduction: ``"mean"`` (SERL) or ``"min"`` over the ensemble.
        temperature_loss: ``"lagrange"`` (SERL) or ``"log"`` (TorchRL ``SACLoss``).
        alpha_init: initial temperature (SERL: 0.01).
        target_entropy: ``"auto"`` = ``-|A| / 2`` (SERL) or a float.
        action_spec: used to read ``|A|`` when the actor has no spec.
        fixed_alpha, min_alpha, max_alpha, reduction: as in ``SACLoss``.
        check_inputs: in eager mode, reject batches with missing keys, wrong shapes or
            non-finite values with a message naming them (skipped while compiling). The
            non-finite check reads a flag back from the device: turn it off for GPU throughput.

    Input keys: ``observation`` (the actor/critic in_keys), ``action``,
    ``("next", <obs keys>)``, ``("next", "reward")``, ``("next", "done")``,
    ``("next", "terminated")``; change them with :meth:`set_keys`.

    Example:
        >>> from torchrl_serl.modules import make_sac_actor, make_sac_critic
        >>> from torchrl.objectives import SoftUpdate
        >>> loss = SERLSACLoss(make_sac_actor(10, 4), make_sac_critic(10, 4))
        >>> loss.make_value_estimator(gamma=0.99)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> # 8 critic-only steps, then one actor + temperature step:
        >>> # loss.loss_critic(batch)["loss_qvalue"].backward(); critic_opt.step(); updater.step()
        >>> # out = loss.loss_actor_alpha(batch); (out["loss_actor"] + out["loss_alpha"]).backward()
    """

    @dataclass
    class _AcceptedKeys(SACLoss._AcceptedKeys):
        """Keys read by the loss; same defaults as :class:`~torchrl.objectives.SACLoss`."""

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0,)

    def __init__(
        self,
        actor_network: TensorDictModule,
        qvalue_network: TensorDictModule,
        *,
        num_critics: int | None = None,
        critic_subset: int | None = 2,
        backup_entropy: bool = False,
        actor_reduction: str = "mean",
        temperature_loss: str = "lagrange",
        alpha_init: float = 0.01,
        target_entropy: str | float = "auto",
        action_spec=None,
        fixed_alpha: bool = False,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        reduction: str | None = None,
        check_inputs: bool = True,
    ) -> None:
        ensembles = [
            (name, m) for name, m in qvalue_network.named_modules() if isinstance(m, EnsembleQValue)
        ]
        if len(ensembles) > 1:
            raise ValueError(
                f"qvalue_network holds {len(ensembles)} EnsembleQValue modules; expected at most 1"
            )
        if ensembles:
            found = ensembles[0][1].num_critics
            if num_critics is not None and num_critics != found:
                raise ValueError(
                    f"num_critics={num_critics} but the critic's EnsembleQValue has {found} critics"
                )
            num_critics = found
            # Key of the ensemble's parameters inside TensorDict.from_module(qvalue_network).
            self._ensemble_key = tuple(ensembles[0][0].split("."))
        elif num_critics is None:
            raise ValueError(
                "num_critics is required when qvalue_network has no EnsembleQValue "
                "(it must write state_action_value [*B, N, 1])"
            )
        else:
            self._ensemble_key = None
        if not isinstance(num_critics, int) or num_critics < 1:
            raise ValueError(f"num_critics must be an int >= 1, got {num_critics!r}")
        if critic_subset is None:
            critic_subset = num_critics
        if not isinstance(critic_subset, int) or not 1 <= critic_subset <= num_critics:
            raise ValueError(
                f"critic_subset must be an int in [1, num_critics={num_critics}], got {critic_subset!r}"
            )
        if actor_reduction not in ACTOR_REDUCTIONS:
            raise ValueError(f"actor_reduction must be one of {ACTOR_REDUCTIONS}, got {actor_reduction!r}")
        if temperature_loss not in TEMPERATURE_LOSSES:
            raise ValueError(
                f"temperature_loss must be one of {TEMPERATURE_LOSSES}, got {temperature_loss!r}"
            )
        if not alpha_init > 0:
            raise ValueError(f"alpha_init must be > 0, got {alpha_init}")
        if target_entropy == "auto":
            spec = action_spec if action_spec is not None else getattr(actor_network, "spec", None)
            if spec is None:
                raise ValueError(
                    "target_entropy='auto' needs the action size: pass action_spec or a float target_entropy"
                )
            if "action" in getattr(spec, "keys", lambda: [])():
                spec = spec["action"]
            target_entropy = -spec.shape[-1] / 2
        super().__init__(
            actor_network,
            qvalue_network,
            num_qvalue_nets=None,  # the ensemble lives inside the critic module
            loss_function="l2",
            alpha_init=alpha_init,
            min_alpha=min_alpha,
            max_alpha=max_alpha,
            action_spec=action_spec,
            fixed_alpha=fixed_alpha,
            target_entropy=float(target_entropy),
            delay_actor=False,
            delay_qvalue=True,
            reduction=reduction,
        )
        self.num_critics = num_critics
        self.critic_subset = critic_subset
        self.backup_entropy = backup_entropy
        self.actor_reduction = actor_reduction
        self.temperature_loss = temperature_loss
        self.check_inputs = check_inputs

    @property
    def out_keys(self):
        return ["loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy", "q_mean", "target_q_mean"]

    @out_keys.setter
    def out_keys(self, values):
        raise AttributeError("SERLSACLoss out_keys are fixed")

    def _obs_keys(self, module) -> list[NestedKey]:
        return [k for k in module.in_keys if k != self.tensor_keys.action]

    def _check(self, tensordict: TensorDictBase) -> None:
        if self.check_inputs and not _tracing_or_capturing():
            self.check_batch(tensordict)

    def check_batch(self, tensordict: TensorDictBase) -> None:
        """Raise a clear error for a batch this loss cannot train on: missing keys, a batch that
        is not flat ``[B]``, reward/done not ``[B, 1]``, NaN/inf values (one device sync).

        The losses call it in eager mode (``check_inputs=True``); a compiled or CUDA-graph update
        calls it on the batch before the update."""
        keys = self.in_keys
        missing = [k for k in keys if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(
                f"SERLSACLoss: batch is missing keys {missing} (needs {sorted(map(str, keys))})"
            )
        if tensordict.ndim != 1:
            raise ValueError(
                f"SERLSACLoss expects a flat batch [B], got batch_size {tuple(tensordict.batch_size)}"
            )
        for name in ("reward", "done", "terminated"):
            key = ("next", getattr(self.tensor_keys, name))
            shape = tuple(tensordict.get(key).shape)
            if shape != (tensordict.shape[0], 1):
                raise ValueError(
                    f"{key} must have shape [B, 1] = {(tensordict.shape[0], 1)}, got {shape}"
                )
        bad = non_finite_entries(tensordict, keys)
        if bad:
            raise ValueError(f"SERLSACLoss: non-finite values (NaN/inf) in batch entries {bad}")

    def _actor_dist(self, tensordict: TensorDictBase):
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            return self.actor_network.get_dist(tensordict.select(*self.actor_network.in_keys, strict=False))

    def draw_target_subset(self, device: torch.device | None = None) -> Tensor:
        """Indices of the M target critics for this update, drawn without replacement ``[M]``."""
        return torch.randperm(self.num_critics, device=device)[: self.critic_subset]

    def _target_q(self, next_td: TensorDictBase) -> Tensor:
        """Min over a random subset of target critics ``[B, 1]``."""
        params = self.target_qvalue_network_params
        device = next_td.device if next_td.device is not None else self.log_alpha.device
        if self.critic_subset == self.num_critics:
            idx = None
        else:
            idx = self.draw_target_subset(device)
        if idx is not None and self._ensemble_key is not None:
            # Only the chosen target critics are computed: slice their stacked weights.
            params = params.data.clone(False)
            ens = params.get(self._ensemble_key)
            params.set(self._ensemble_key, ens.apply(lambda p: p.index_select(0, idx)))
            idx = None
        with params.to_module(self.qvalue_network, preserve_module_state=False):
            q = self.qvalue_network(next_td).get(self.tensor_keys.state_action_value)
        if idx is not None:
            q = q.index_select(-2, idx)
        return q.amin(-2)

    def loss_critic(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Critic loss alone: gradients reach the critic (and its encoder) only.

        Returns ``loss_qvalue`` and detached ``q_mean``/``target_q_mean``.
        """
        self._check(tensordict)
        with torch.no_grad():
            next_td = tensordict.get("next")
            with set_exploration_type(ExplorationType.RANDOM):
                next_action, next_log_prob = compute_rsample_log_prob(self._actor_dist(next_td))
            next_q_in = next_td.select(*self._obs_keys(self.qvalue_network), strict=False)
            next_q_in.set(self.tensor_keys.action, next_action)
            next_value = self._target_q(next_q_in)
            if self.backup_entropy:
                next_value = next_value - self._alpha * next_log_prob.unsqueeze(-1)
            target = self.value_estimator.value_estimate(tensordict, next_value=next_value)
        q_in = tensordict.select(*self.qvalue_network.in_keys, strict=False)
        with self.qvalue_network_params.to_module(self.qvalue_network, preserve_module_state=False):
            q = self.qvalue_network(q_in).get(self.tensor_keys.state_action_value)  # [B, N, 1]
        if q.shape[-2] != self.num_critics:
            raise ValueError(
                f"critic returned {q.shape[-2]} values per sample, "
                f"expected num_critics={self.num_critics}"
            )
        loss = (q - target.unsqueeze(-2)).pow(2).sum((-2, -1))  # SERL: sum over the ensemble
        weights = self._maybe_get_priority_weight(tensordict)
        loss = self._reduce_loss(loss, tensordict=tensordict, weights=weights)
        return TensorDict(
            loss_qvalue=loss, q_mean=q.detach().mean(), target_q_mean=target.mean(), batch_size=[]
        )

    def loss_actor_alpha(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Actor and temperature losses: ``loss_actor`` reaches the actor only, ``loss_alpha``
        reaches ``log_alpha`` only. Also returns detached ``alpha`` and ``entropy``."""
        self._check(tensordict)
        with set_exploration_type(ExplorationType.RANDOM):
            action, log_prob = compute_rsample_log_prob(self._actor_dist(tensordict))
        q_in = tensordict.select(*self._obs_keys(self.qvalue_network), strict=False)
        q_in.set(self.tensor_keys.action, action)
        detached = self._cached_detached_qvalue_params
        with detached.to_module(self.qvalue_network, preserve_module_state=False):
            q = self.qvalue_network(q_in).get(self.tensor_keys.state_action_value)
        q = q.mean(-2) if self.actor_reduction == "mean" else q.amin(-2)
        alpha = self._alpha
        weights = self._maybe_get_priority_weight(tensordict)
        loss_actor = alpha * log_prob - q.squeeze(-1)
        loss_actor = self._reduce_loss(loss_actor, tensordict=tensordict, weights=weights)
        entropy = -log_prob.detach().mean()
        if self.temperature_loss == "lagrange":
            loss_alpha = self.log_alpha.exp() * (entropy - self.target_entropy)
        else:
            loss_alpha = (-self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        return TensorDict(
            loss_actor=loss_actor, loss_alpha=loss_alpha, alpha=alpha, entropy=entropy, batch_size=[]
        )

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All three losses (one SERL full update); sum the ``loss_*`` entries to step everything."""
        out = self.loss_critic(tensordict)
        out.update(self.loss_actor_alpha(tensordict))
        return out
