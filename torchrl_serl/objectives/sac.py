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
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator

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
        actor_network: a probabilistic actor writing ``action`` with ``TanhNormal`` (a stock
            :class:`~torchrl.modules.ProbabilisticActor`, or
            :func:`torchrl_serl.modules.make_sac_actor`).
        qvalue_network: either the critic :class:`~torchrl.objectives.SACLoss` takes, one
            ``Q(s, a)`` writing ``state_action_value`` ``[*B, 1]`` (e.g. a stock
            :class:`~torchrl.modules.ValueOperator`), which the loss copies into ``num_critics``
            independently re-initialised critics with stacked parameters ``[N, ...]`` evaluated
            by one ``vmap``; or a module holding an :class:`~torchrl_serl.modules.EnsembleQValue`
            that writes ``[*B, N, 1]`` for all N at once (see
            :func:`torchrl_serl.modules.make_sac_critic`; faster, SERL's LayerNorm critic). Either
            way only the M drawn target critics are evaluated.

    Keyword Args:
        num_critics: N (SERL: 10). Required for a single critic; read from the
            :class:`EnsembleQValue` otherwise.
        critic_subset: M, ``1 <= M <= N`` (SERL: 2). ``None`` takes the min over all N.
        backup_entropy: entropy term in the target (SERL: ``False``).
        actor_reduction: ``"mean"`` (SERL) or ``"min"`` over the ensemble.
        temperature_loss: ``"lagrange"`` (SERL) or ``"log"`` (TorchRL ``SACLoss``).
        alpha_init: initial temperature (SERL: 0.01).
        target_entropy: ``"auto"`` = ``-|A| / 2`` (SERL) or a float.
        action_spec: used to read ``|A|`` when the actor has no spec.
        fixed_alpha, min_alpha, max_alpha, reduction: as in ``SACLoss``.
        check_inputs: in eager mode, run :meth:`check_batch` on every batch (skipped while
            compiling). The non-finite check reads a flag back from the device: turn it off for
            GPU throughput and call :meth:`check_batch` outside the compiled update instead.

    Input keys: ``observation`` (the actor/critic in_keys), ``action``,
    ``("next", <obs keys>)``, ``("next", "reward")``, ``("next", "done")``,
    ``("next", "terminated")``, optionally ``priority_weight``; change them with
    :meth:`set_keys`. Output keys: :attr:`out_keys`, filtered with :meth:`select_out_keys`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import NormalParamExtractor, TensorDictModule
        >>> from torchrl.data import Bounded
        >>> from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
        >>> from torchrl.objectives import SoftUpdate
        >>> n_obs, n_act, batch = 3, 2, 8
        >>> spec = Bounded(-1.0, 1.0, shape=(n_act,))
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(torch.nn.Sequential(MLP(n_obs, 2 * n_act, num_cells=[32]),
        ...                                          NormalParamExtractor()),
        ...                      in_keys=["observation"], out_keys=["loc", "scale"]),
        ...     in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal)
        >>> qvalue = ValueOperator(MLP(n_obs + n_act, 1, num_cells=[32]), in_keys=["observation", "action"])
        >>> loss = SERLSACLoss(actor, qvalue, num_critics=10)  # where SACLoss takes num_qvalue_nets
        >>> loss.make_value_estimator(gamma=0.99)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> data = TensorDict(
        ...     observation=torch.randn(batch, n_obs), action=spec.rand((batch,)),
        ...     next=TensorDict(observation=torch.randn(batch, n_obs), reward=torch.randn(batch, 1),
        ...                     done=torch.zeros(batch, 1, dtype=torch.bool),
        ...                     terminated=torch.zeros(batch, 1, dtype=torch.bool)),
        ...     batch_size=[batch])
        >>> out = loss(data)
        >>> sorted(out.keys())
        ['alpha', 'entropy', 'loss_actor', 'loss_alpha', 'loss_qvalue', 'q_mean', 'target_q_mean']
        >>> (out["loss_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
        >>> loss.qvalue_network_params["module", "0", "weight"].shape  # N stacked critics
        torch.Size([10, 32, 5])

    High update-to-data (SERL): several critic-only steps, then one actor + temperature step.

        >>> critic_out = loss.loss_critic(data)  # loss_qvalue, q_mean, target_q_mean
        >>> actor_out = loss.loss_actor_alpha(data)  # loss_actor, loss_alpha, alpha, entropy
        >>> _ = loss.select_out_keys("loss_actor", "loss_qvalue")
        >>> sorted(loss(data).keys())
        ['loss_actor', 'loss_qvalue']
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss (it writes nothing into the input); defaults as
        :class:`~torchrl.objectives.SACLoss`'s.

        Attributes:
            action: the action ``[*B, A]``; the actor's sample key by default.
            state_action_value: the critic's output, ``[*B, 1]`` or ``[*B, N, 1]``.
            reward, done, terminated: read under ``"next"``, ``[*B, 1]``.
            priority_weight: importance weights of a prioritized buffer, used when present.
        """

        action: NestedKey = "action"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        priority_weight: NestedKey = "priority_weight"

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
                "num_critics is required for a single critic (one Q(s, a) writing "
                "state_action_value [*B, 1]): the loss makes num_critics copies of it"
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
            # A single critic is copied N times (stacked, re-initialised) as SACLoss does; an
            # EnsembleQValue already holds the N critics.
            num_qvalue_nets=None if self._ensemble_key is not None else num_critics,
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
    def out_keys(self) -> list[str]:
        """Entries of :meth:`forward`'s output: the three ``loss_*`` and detached diagnostics."""
        if self._out_keys is None:
            self._out_keys = [
                "loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy", "q_mean", "target_q_mean"
            ]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values) -> None:
        self._out_keys = values

    def set_keys(self, **kwargs) -> None:
        if not hasattr(self, "num_critics"):
            # Called from SACLoss.__init__ with the actor's log-prob key, which this loss does
            # not have (it reads no stored log-prob); a user's set_keys(log_prob=...) raises.
            kwargs.pop("log_prob", None)
        super().set_keys(**kwargs)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(
                reward=self.tensor_keys.reward, done=self.tensor_keys.done, terminated=self.tensor_keys.terminated
            )
        self._set_in_keys()

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams) -> None:
        """The TD(0) target ``r + gamma (1 - terminated) V(s')``; ``gamma`` is the discount."""
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            return
        dispatch_value_estimator(
            self,
            value_type,
            supported=self.SUPPORTED_VALUE_ESTIMATORS,
            tensor_keys={
                "reward": self.tensor_keys.reward,
                "done": self.tensor_keys.done,
                "terminated": self.tensor_keys.terminated,
            },
            value_network=None,
            **hp,
        )

    def _obs_keys(self, module) -> list[NestedKey]:
        return [k for k in module.in_keys if k != self.tensor_keys.action]

    def check_batch(self, tensordict: TensorDictBase, with_next: bool = True) -> None:
        """Raise a clear error for a batch this loss cannot train on: missing keys, a batch that
        is not flat ``[B]``, reward/done not ``[B, 1]``, NaN/inf values (one device sync).
        ``with_next=False`` checks only what :meth:`loss_actor_alpha` reads.

        The loss calls it on every batch in eager mode (``check_inputs=True``); a compiled or
        CUDA-graph update calls it on the batch before the update."""
        keys = self.in_keys if with_next else list(self.actor_network.in_keys)
        missing = [k for k in keys if k not in tensordict.keys(True)]
        if missing:
            raise KeyError(
                f"{type(self).__name__}: batch is missing keys {missing} (needs {sorted(map(str, keys))})"
            )
        if tensordict.ndim != 1:
            raise ValueError(
                f"{type(self).__name__} expects a flat batch [B], got batch_size {tuple(tensordict.batch_size)}"
            )
        b = tensordict.shape[0]
        if with_next:
            for name in ("reward", "done", "terminated"):
                key = ("next", getattr(self.tensor_keys, name))
                shape = tuple(tensordict.get(key).shape)
                if shape != (b, 1):
                    raise ValueError(f"{key} must have shape [B, 1] = {(b, 1)}, got {shape}")
        bad = non_finite_entries(tensordict, keys)
        if bad:
            raise ValueError(f"{type(self).__name__}: non-finite values (NaN/inf) in batch entries {bad}")

    def _loss_inputs(
        self, tensordict: TensorDictBase, with_next: bool = True
    ) -> tuple[TensorDictBase | None, TensorDictBase]:
        """``(critic_td, actor_td)`` the SAC math reads: the batch itself here (``critic_td`` is
        ``None`` without next obs); :class:`~torchrl_serl.objectives.DrQLoss` returns embeddings."""
        return (tensordict if with_next else None), tensordict

    def _actor_dist(self, tensordict: TensorDictBase):
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            return self.actor_network.get_dist(tensordict.select(*self.actor_network.in_keys, strict=False))

    def draw_target_subset(self, device: torch.device | None = None) -> Tensor:
        """Indices of the M target critics for this update, drawn without replacement ``[M]``."""
        return torch.randperm(self.num_critics, device=device)[: self.critic_subset]

    def _critic_values(self, params: TensorDictBase, tensordict: TensorDictBase, idx: Tensor | None = None) -> Tensor:
        """Q-values of the critics in ``params`` (all N, or the ``idx`` subset only) ``[*B, N or M, 1]``."""
        key = self.tensor_keys.state_action_value
        if self._ensemble_key is None:
            # A single critic with N stacked parameter sets: vmap over the ensemble dim.
            if idx is not None:
                params = params[idx]
            q = self._vmap_qnetworkN0(tensordict, params).get(key)  # [N, *B, 1]
            expected = (params.shape[0], *tensordict.shape, 1)
            if tuple(q.shape) != expected:
                raise ValueError(
                    f"a single critic must write {key!r} [*B, 1] = {list(expected[1:])}, got "
                    f"{list(q.shape[1:])}; a module computing N critics at once must hold an EnsembleQValue"
                )
            return q.movedim(0, -2)
        if idx is not None:
            # Only the chosen critics are computed: slice their stacked weights.
            params = params.data.clone(False)
            ens = params.get(self._ensemble_key)
            params.set(self._ensemble_key, ens.apply(lambda p: p.index_select(0, idx)))
        with params.to_module(self.qvalue_network, preserve_module_state=False):
            q = self.qvalue_network(tensordict).get(key)
        n = self.num_critics if idx is None else idx.shape[0]
        expected = (*tensordict.shape, n, 1)
        if tuple(q.shape) != expected:
            raise ValueError(f"the critic ensemble must write {key!r} [*B, N, 1] = {list(expected)}, got {list(q.shape)}")
        return q

    def _target_q(self, next_td: TensorDictBase) -> Tensor:
        """Min over a random subset of target critics ``[B, 1]``."""
        idx = None
        if self.critic_subset != self.num_critics:
            device = next_td.device if next_td.device is not None else self.log_alpha.device
            idx = self.draw_target_subset(device)
        return self._critic_values(self.target_qvalue_network_params, next_td, idx).amin(-2)

    def _critic_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
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
        q = self._critic_values(self.qvalue_network_params, q_in)  # [B, N, 1]
        loss = (q - target.unsqueeze(-2)).pow(2).sum((-2, -1))  # SERL: sum over the ensemble
        weights = self._maybe_get_priority_weight(tensordict)
        loss = self._reduce_loss(loss, tensordict=tensordict, weights=weights)
        return TensorDict(
            loss_qvalue=loss, q_mean=q.detach().mean(), target_q_mean=target.mean(), batch_size=[]
        )

    def _actor_alpha_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        with set_exploration_type(ExplorationType.RANDOM):
            action, log_prob = compute_rsample_log_prob(self._actor_dist(tensordict))
        q_in = tensordict.select(*self._obs_keys(self.qvalue_network), strict=False)
        q_in.set(self.tensor_keys.action, action)
        q = self._critic_values(self._cached_detached_qvalue_params, q_in)
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

    def loss_critic(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Critic loss alone: gradients reach the critic (and its encoder) only.

        Returns ``loss_qvalue`` and detached ``q_mean``/``target_q_mean``.
        """
        if self.check_inputs and not _tracing_or_capturing():
            self.check_batch(tensordict)
        critic_td, _ = self._loss_inputs(tensordict)
        return self._critic_loss(critic_td)

    def loss_actor_alpha(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Actor and temperature losses: ``loss_actor`` reaches the actor only, ``loss_alpha``
        reaches ``log_alpha`` only. Also returns detached ``alpha`` and ``entropy``. Needs only
        the current observation."""
        if self.check_inputs and not _tracing_or_capturing():
            self.check_batch(tensordict, with_next=False)
        _, actor_td = self._loss_inputs(tensordict, with_next=False)
        return self._actor_alpha_loss(actor_td)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All three losses (one SERL full update); sum the ``loss_*`` entries to step everything."""
        if self.check_inputs and not _tracing_or_capturing():
            self.check_batch(tensordict)
        critic_td, actor_td = self._loss_inputs(tensordict)
        out = self._critic_loss(critic_td)
        out.update(self._actor_alpha_loss(actor_td))
        return out
