"""Thin SERL-style agent facade for porting SERL scripts: ``create_states``/``create_pixels``,
``update(batch, utd_ratio)``, ``sample_actions(obs)``.

No second implementation of the math: an agent owns a TorchRL loss
(:class:`~torchrl_serl.objectives.sac.SERLSACLoss` or :class:`~torchrl_serl.objectives.drq.DrQLoss`),
a :class:`~torchrl.objectives.SoftUpdate` and one optimizer per parameter group (critic, actor,
temperature), and runs them with the recipes' learner step,
:class:`~torchrl_serl.training.updater.SACUpdater` (its docstring ties the schedule to SERL's). Batches may be TorchRL tensordicts
(``observation``, ``action``, ``("next", ...)``) or SERL dicts (``observations``, ``actions``,
``next_observations``, ``rewards``, ``masks``, ``dones``); images may be channels-first (this
package) or channels-last (SERL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_serl.modules.drq_networks import make_drq_networks, make_drq_policy
from torchrl_serl.modules.sac_networks import make_sac_actor, make_sac_critic
from torchrl_serl.objectives.drq import DrQLoss
from torchrl_serl.objectives.sac import SERLSACLoss
from torchrl_serl.optim import make_lr_schedule, make_optimizer
from torchrl_serl.training.updater import SACUpdater

_ACTIVATIONS = {"tanh": (nn.Tanh, torch.tanh), "relu": (nn.ReLU, torch.relu), "swish": (nn.SiLU, nn.functional.silu)}
_NETWORK_KWARGS = {"hidden_dims", "use_layer_norm", "activations", "activate_final"}
_POLICY_KWARGS = {"tanh_squash_distribution", "std_parameterization", "std_min", "std_max"}
_OPTIMIZER_KWARGS = {"learning_rate", "warmup_steps", "cosine_decay_steps", "clip_grad_norm", "weight_decay"}
# SERL's encoder_type names and this package's.
_ENCODER_TYPES = {"resnet-pretrained": "resnet10", "resnet10": "resnet10", "small": "small", "mobilenet": "mobilenet"}


def _check_kwargs(name: str, kwargs: Mapping | None, allowed: set[str]) -> dict:
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"{name}: unsupported keys {sorted(unknown)}; supported: {sorted(allowed)}")
    return kwargs


def _network_config(kwargs: Mapping | None, name: str) -> tuple[tuple[int, ...], bool, str]:
    kw = _check_kwargs(name, kwargs, _NETWORK_KWARGS)
    activation = kw.get("activations", "tanh")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{name}['activations'] must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if kw.get("activate_final", True) is not True:
        raise ValueError(f"{name}['activate_final'] must be True (SERL's actor/critic trunks)")
    return tuple(kw.get("hidden_dims", (256, 256))), bool(kw.get("use_layer_norm", True)), activation


def _policy_config(kwargs: Mapping | None) -> dict:
    kw = _check_kwargs("policy_kwargs", kwargs, _POLICY_KWARGS)
    if kw.get("tanh_squash_distribution", True) is not True:
        raise ValueError("policy_kwargs['tanh_squash_distribution'] must be True (tanh-Gaussian policy)")
    std = kw.get("std_parameterization", "exp")
    if std != "exp":
        raise ValueError(f"policy_kwargs['std_parameterization'] must be 'exp', got {std!r}")
    return {"std_min": kw.get("std_min", 1e-5), "std_max": kw.get("std_max", 10.0)}


class _Agent:
    """Shared update/act machinery; build agents with the ``create_*`` constructors."""

    # the agent's optimizer names and SACUpdater's
    _UPDATER_NAMES = {"critic": "critic_optim", "actor": "actor_optim", "temperature": "alpha_optim"}

    def __init__(
        self,
        loss: SERLSACLoss,
        policy: TensorDictModuleBase,
        critic_params: list[torch.Tensor],
        *,
        tau: float,
        actor_optimizer_kwargs: Mapping | None,
        critic_optimizer_kwargs: Mapping | None,
        temperature_optimizer_kwargs: Mapping | None,
        compile: bool,
    ) -> None:
        if not 0 < tau <= 1:
            raise ValueError(f"soft_target_update_rate must be in (0, 1], got {tau}")
        self.loss = loss
        self.policy = policy
        self.target_updater = SoftUpdate(loss, tau=tau)
        actor_params = list(loss.actor_network_params.values(True, True))
        groups = {
            "critic": (critic_params, critic_optimizer_kwargs),
            "actor": (actor_params, actor_optimizer_kwargs),
            "temperature": ([loss.log_alpha], temperature_optimizer_kwargs),
        }
        self.optimizers, self.schedulers, self.max_grad_norms, self.params = {}, {}, {}, {}
        for name, (params, kwargs) in groups.items():
            kw = _check_kwargs(f"{name}_optimizer_kwargs", kwargs, _OPTIMIZER_KWARGS)
            opt = make_optimizer(params, lr=kw.get("learning_rate", 3e-4), weight_decay=kw.get("weight_decay") or 0.0)
            self.optimizers[name] = opt
            self.params[name] = params
            self.max_grad_norms[name] = kw.get("clip_grad_norm")
            if kw.get("warmup_steps", 0) or kw.get("cosine_decay_steps") is not None:
                self.schedulers[name] = make_lr_schedule(opt, kw.get("warmup_steps", 0), kw.get("cosine_decay_steps"))
        self._compile = compile
        self._updaters: dict[int, SACUpdater] = {}
        self.step = 0

    def _updater(self, utd_ratio: int) -> SACUpdater:
        if utd_ratio not in self._updaters:
            names = self._UPDATER_NAMES
            self._updaters[utd_ratio] = SACUpdater(
                self.loss,
                {names[k]: opt for k, opt in self.optimizers.items()},
                self.target_updater,
                utd_ratio,
                max_grad_norms={names[k]: v for k, v in self.max_grad_norms.items() if v is not None},
                lr_schedulers={names[k]: v for k, v in self.schedulers.items()},
                compile=self._compile,
            )
        return self._updaters[utd_ratio]

    def _to_tensordict(self, obs) -> TensorDictBase:
        """Observation(s) -> tensordict with this package's keys and channels-first images."""
        raise NotImplementedError

    def _batch(self, batch) -> TensorDictBase:
        if isinstance(batch, TensorDictBase):
            return batch
        if not isinstance(batch, Mapping) or "observations" not in batch:
            raise TypeError(
                "batch must be a TensorDict (observation, action, next/...) or a SERL dict with "
                f"observations, actions, next_observations, rewards, masks; got {type(batch).__name__}"
            )
        missing = [k for k in ("actions", "next_observations", "rewards", "masks") if k not in batch]
        if missing:
            raise KeyError(f"SERL batch is missing {missing}")
        td = self._to_tensordict(batch["observations"])
        b = td.batch_size
        rewards = torch.as_tensor(batch["rewards"], dtype=torch.float32).reshape(*b, 1)
        # SERL's mask is 1 - terminated (bootstrap unless the episode truly ended).
        terminated = torch.as_tensor(batch["masks"]).reshape(*b, 1) == 0
        done = torch.as_tensor(batch["dones"]).reshape(*b, 1).bool() if "dones" in batch else terminated
        td.set("action", torch.as_tensor(batch["actions"], dtype=torch.float32))
        nxt = self._to_tensordict(batch["next_observations"])
        nxt.update({"reward": rewards, "terminated": terminated, "done": done | terminated})
        td.set("next", nxt)
        return td

    def update(self, batch, utd_ratio: int = 1) -> dict[str, float]:
        """One learner step of :class:`~torchrl_serl.training.updater.SACUpdater`: the batch is
        split into ``utd_ratio`` disjoint minibatches, critic-only updates on all but the last, one
        critic + actor + temperature update on the last (each critic update moves the target by
        ``tau``). Returns the last update's detached diagnostics as floats (``<group>_grad_norm``
        before clipping where ``clip_grad_norm`` is set; the temperature's is ``alpha_grad_norm``).

        Args:
            batch: ``[B]`` transitions (TensorDict or SERL dict), ``B`` divisible by ``utd_ratio``.
            utd_ratio: critic updates in this step (SERL: 8 state, 4 pixels).
        """
        info = self._updater(utd_ratio).update(self._batch(batch))
        self.step += 1
        return {k.removeprefix("train/"): v for k, v in info.items()}

    @torch.no_grad()
    def sample_actions(self, observations, deterministic: bool = False) -> torch.Tensor:
        """Actions ``[*B, A]`` in ``[-1, 1]`` for observations ``[*B, ...]`` (tanh-Gaussian sample,
        or its mode with ``deterministic=True``)."""
        td = self._to_tensordict(observations)
        mode = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
        with set_exploration_type(mode):
            return self.policy(td)["action"]

    def state_dict(self) -> dict:
        """Policy (a frozen encoder trunk included), loss (networks, targets, temperature) and
        optimizer states, for ``torch.save``."""
        return {
            "policy": self.policy.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "step": self.step,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.policy.load_state_dict(state["policy"])
        self.loss.load_state_dict(state["loss"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.step = state["step"]


class SACAgent(_Agent):
    """SERL's state SAC agent (``serl_launcher.agents.continuous.sac.SACAgent``) on :class:`SERLSACLoss`."""

    @classmethod
    def create_states(
        cls,
        observations,
        actions: torch.Tensor,
        *,
        critic_network_kwargs: Mapping | None = None,
        policy_network_kwargs: Mapping | None = None,
        policy_kwargs: Mapping | None = None,
        critic_ensemble_size: int = 10,
        critic_subsample_size: int | None = 2,
        temperature_init: float = 0.01,
        discount: float = 0.99,
        soft_target_update_rate: float = 0.005,
        target_entropy: float | None = None,
        backup_entropy: bool = False,
        actor_optimizer_kwargs: Mapping | None = None,
        critic_optimizer_kwargs: Mapping | None = None,
        temperature_optimizer_kwargs: Mapping | None = None,
        compile: bool = False,
    ) -> SACAgent:
        """Build from example tensors, with SERL's argument names.

        Args:
            observations: example states ``[B, D]`` (tensor, or a mapping with ``"state"``/``"observation"``).
            actions: example actions ``[B, A]``.
            critic_network_kwargs, policy_network_kwargs: ``hidden_dims``, ``use_layer_norm``,
                ``activations`` (``"tanh"``, ``"relu"``, ``"swish"``).
            policy_kwargs: ``std_min``, ``std_max`` (tanh-squashed, ``exp`` std as SERL).
            *_optimizer_kwargs: ``learning_rate``, ``warmup_steps``, ``cosine_decay_steps``,
                ``clip_grad_norm``, ``weight_decay`` (SERL's ``make_optimizer``).
            compile: ``torch.compile`` the losses.

        Defaults are SERL's example learner settings (ensemble 10, subset 2, temperature 0.01,
        discount 0.99, target entropy ``-|A|/2``).
        """
        agent = cls.__new__(cls)
        obs = agent._state_tensor(observations)
        action_dim = int(torch.as_tensor(actions).shape[-1])
        obs_dim = int(obs.shape[-1])
        c_hidden, c_ln, c_act = _network_config(critic_network_kwargs, "critic_network_kwargs")
        p_hidden, p_ln, p_act = _network_config(policy_network_kwargs, "policy_network_kwargs")
        actor = make_sac_actor(
            obs_dim, action_dim, hidden=p_hidden, layer_norm=p_ln, activation=_ACTIVATIONS[p_act][0],
            **_policy_config(policy_kwargs),
        ).to(obs.device)
        critic = make_sac_critic(
            obs_dim, action_dim, num_critics=critic_ensemble_size, hidden=c_hidden, layer_norm=c_ln,
            activation=_ACTIVATIONS[c_act][1],
        ).to(obs.device)
        loss = SERLSACLoss(
            actor, critic, critic_subset=critic_subsample_size, backup_entropy=backup_entropy,
            alpha_init=temperature_init, target_entropy="auto" if target_entropy is None else target_entropy,
        )
        loss.make_value_estimator(gamma=discount)
        _Agent.__init__(
            agent, loss, actor, list(loss.qvalue_network_params.values(True, True)),
            tau=soft_target_update_rate, actor_optimizer_kwargs=actor_optimizer_kwargs,
            critic_optimizer_kwargs=critic_optimizer_kwargs,
            temperature_optimizer_kwargs=temperature_optimizer_kwargs, compile=compile,
        )
        agent.obs_dim = obs_dim
        return agent

    @staticmethod
    def _state_tensor(obs) -> torch.Tensor:
        if isinstance(obs, (Mapping, TensorDictBase)):
            key = next((k for k in ("observation", "state") if k in obs.keys()), None)
            if key is None:
                raise KeyError(f"state observations need an 'observation' or 'state' entry, got {list(obs.keys())}")
            obs = obs[key]
        obs = torch.as_tensor(obs, dtype=torch.float32)
        if obs.ndim < 1:
            raise ValueError(f"state observations must be [*B, D], got shape {tuple(obs.shape)}")
        return obs

    def _to_tensordict(self, obs) -> TensorDictBase:
        obs = self._state_tensor(obs)
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must be [*B, {self.obs_dim}], got shape {tuple(obs.shape)}")
        return TensorDict(observation=obs, batch_size=obs.shape[:-1])


class DrQAgent(_Agent):
    """SERL's pixel agent (``serl_launcher.agents.continuous.drq.DrQAgent``) on :class:`DrQLoss`."""

    @classmethod
    def create_pixels(
        cls,
        observations: Mapping,
        actions: torch.Tensor,
        *,
        image_keys: Sequence[str] = ("front", "wrist"),
        encoder_type: str = "resnet10",
        pretrained_path: str | Path | None = None,
        use_proprio: bool = True,
        critic_network_kwargs: Mapping | None = None,
        policy_network_kwargs: Mapping | None = None,
        policy_kwargs: Mapping | None = None,
        critic_ensemble_size: int = 10,
        critic_subsample_size: int | None = 2,
        temperature_init: float = 0.01,
        discount: float = 0.96,
        soft_target_update_rate: float = 0.005,
        target_entropy: float | None = None,
        backup_entropy: bool = False,
        augmentation_pad: int = 4,
        actor_optimizer_kwargs: Mapping | None = None,
        critic_optimizer_kwargs: Mapping | None = None,
        temperature_optimizer_kwargs: Mapping | None = None,
        compile: bool = False,
    ) -> DrQAgent:
        """Build from example observations (SERL's ``create_drq``/``create_pixels`` arguments).

        Args:
            observations: mapping with one uint8 image per ``image_keys`` (``[B, 3, H, W]`` or SERL's
                ``[B, H, W, 3]``) and, with ``use_proprio``, the state (``"state"`` or ``"observation"``).
            actions: example actions ``[B, A]``.
            encoder_type: ``"resnet10"`` / ``"resnet-pretrained"`` (frozen ResNet-10, learned spatial
                embeddings; load SERL's weights with ``pretrained_path``), ``"small"`` or ``"mobilenet"``.
            pretrained_path: local trunk weights; nothing is downloaded.
            augmentation_pad: random-shift padding in px (0 disables augmentation).
            others: as :meth:`SACAgent.create_states`; ``discount`` defaults to SERL's pixel 0.96.
        """
        if encoder_type not in _ENCODER_TYPES:
            raise ValueError(f"encoder_type must be one of {sorted(_ENCODER_TYPES)}, got {encoder_type!r}")
        agent = cls.__new__(cls)
        agent.image_keys = tuple(image_keys)
        agent.use_proprio = use_proprio
        agent.image_size = None
        agent.proprio_dim = None
        example = agent._to_tensordict(observations)
        c_hidden, c_ln, c_act = _network_config(critic_network_kwargs, "critic_network_kwargs")
        p_hidden, p_ln, p_act = _network_config(policy_network_kwargs, "policy_network_kwargs")
        if (c_hidden, c_ln, c_act) != (p_hidden, p_ln, p_act) or c_act != "tanh" or not c_ln:
            raise ValueError(
                "DrQAgent builds SERL's pixel networks: actor and critic share hidden_dims, with "
                "LayerNorm and tanh"
            )
        action_dim = int(torch.as_tensor(actions).shape[-1])
        actor, qvalue, encoder = make_drq_networks(
            camera_keys=agent.image_keys,
            image_size=agent.image_size,
            proprio_dim=agent.proprio_dim if use_proprio else 0,
            proprio_key="observation" if use_proprio else None,
            action_dim=action_dim,
            encoder=_ENCODER_TYPES[encoder_type],
            pretrained_path=pretrained_path,
            num_critics=critic_ensemble_size,
            hidden=c_hidden,
            actor_kwargs=_policy_config(policy_kwargs),
        )
        device = example.device
        actor, qvalue, encoder = actor.to(device), qvalue.to(device), encoder.to(device)
        loss = DrQLoss(
            actor, qvalue, encoder, augment=augmentation_pad > 0, pad=augmentation_pad,
            critic_subset=critic_subsample_size, backup_entropy=backup_entropy, alpha_init=temperature_init,
            target_entropy="auto" if target_entropy is None else target_entropy,
        )
        loss.make_value_estimator(gamma=discount)
        critic_params = list(loss.qvalue_network_params.values(True, True)) + [
            p for p in loss.encoder_params.values(True, True) if p.requires_grad
        ]
        _Agent.__init__(
            agent, loss, make_drq_policy(actor, encoder), critic_params,
            tau=soft_target_update_rate, actor_optimizer_kwargs=actor_optimizer_kwargs,
            critic_optimizer_kwargs=critic_optimizer_kwargs,
            temperature_optimizer_kwargs=temperature_optimizer_kwargs, compile=compile,
        )
        agent.encoder = encoder
        return agent

    def _to_tensordict(self, obs) -> TensorDictBase:
        if not isinstance(obs, (Mapping, TensorDictBase)):
            raise TypeError(f"pixel observations must be a mapping of images (+ state), got {type(obs).__name__}")
        out = {}
        for k in self.image_keys:
            if k not in obs.keys():
                raise KeyError(f"observation has no image {k!r}; keys: {list(obs.keys())}")
            img = torch.as_tensor(obs[k])
            if img.dtype != torch.uint8:
                raise TypeError(f"image {k!r} must be uint8, got {img.dtype}")
            if img.ndim >= 3 and img.shape[-1] == 3 and img.shape[-3] != 3:
                img = img.movedim(-1, -3)  # SERL's channels-last -> this package's channels-first
            if img.ndim < 3 or img.shape[-3] != 3 or img.shape[-1] != img.shape[-2]:
                raise ValueError(f"image {k!r} must be square RGB [*B, 3, H, H] or [*B, H, H, 3], got {tuple(img.shape)}")
            if self.image_size is None:
                self.image_size = int(img.shape[-1])
            out[k] = img
        batch = out[self.image_keys[0]].shape[:-3]
        if self.use_proprio:
            state = SACAgent._state_tensor(obs)
            if self.proprio_dim is None:
                self.proprio_dim = int(state.shape[-1])
            out["observation"] = state
        return TensorDict(out, batch_size=batch, device=out[self.image_keys[0]].device)
