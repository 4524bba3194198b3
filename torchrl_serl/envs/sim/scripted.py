"""A scripted (non-learned) pick policy: proves the tasks are solvable and makes demos."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


class ScriptedPickPolicy(TensorDictModuleBase):
    """Hover over the cube, descend, close, lift: ``td -> td`` with ``action [*B, 4]`` in ``[-1, 1]``.

    A ``TensorDictModuleBase`` (in_keys ``observation``, out_keys ``action``), so it plugs into
    ``env.rollout`` and TorchRL collectors, e.g. to record demonstrations.

    Stateless (decides from the current observation only), so it works on batched tensordicts and
    recovers from a missed grasp by re-opening. Reads ``block_pos``, ``gripper`` and ``tcp_pos`` from
    the state ``observation [*B, 10]``; for pixel tasks (``observation [*B, 7]``) the cube position
    comes from a ``block_pos [*B, 3]`` entry if present, else from ``env.block_pos()`` (privileged
    simulator state, single env only).

    Args:
        env: the env, only needed for pixel tasks without a ``block_pos`` entry.
        action_scale_m: the env's metres per action unit (SERL: 0.1).
        gain: fraction of the remaining TCP error commanded per step (< 1 because the TCP lags
            its target under impedance/IK tracking).
        noise_std: std of Gaussian noise added to the move part of the action (diverse demos);
            drawn from ``generator``.
    """

    def __init__(self, env=None, action_scale_m: float = 0.1, gain: float = 0.6,
                 noise_std: float = 0.0, generator: torch.Generator | None = None,
                 hover_m: float = 0.06, grasp_tol_m: float = 0.012):
        super().__init__()
        self.in_keys = ["observation"]
        self.out_keys = ["action"]
        # a bound method, not the env: an EnvBase is an nn.Module and would become a submodule
        self._privileged_block_pos = env.block_pos if env is not None else None
        self.action_scale_m = action_scale_m
        self.gain = gain
        self.noise_std = noise_std
        self.generator = generator
        self.hover_m = hover_m
        self.grasp_tol_m = grasp_tol_m

    def _state(self, td: TensorDictBase):
        if "tcp_pose_origin" in td.keys():
            raise ValueError("the scripted policy moves the tool in the base frame and reads the base-frame observation: "
                             "build its env without RelativeFrame (EnvConfig.relative_pose=False)")
        obs = td.get("observation")
        if obs.shape[-1] == 10:
            return obs[..., 0:3], obs[..., 3], obs[..., 4:7]
        if obs.shape[-1] != 7:
            raise ValueError(f"observation must have 10 (state) or 7 (pixel task) entries, got {obs.shape[-1]}")
        block = td.get("block_pos", None)
        if block is None:
            if self._privileged_block_pos is None:
                raise ValueError("pixel task: pass env= or put a 'block_pos' entry in the tensordict")
            block = torch.as_tensor(self._privileged_block_pos(), dtype=obs.dtype, device=obs.device)
            block = block.expand(*obs.shape[:-1], 3)
        return block, obs[..., 6], obs[..., 0:3]

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        block, grip, tcp = self._state(td)
        delta = block - tcp
        xy_err = delta[..., :2].norm(dim=-1)
        near = delta.norm(dim=-1) < 2 * self.grasp_tol_m
        closed = grip > 0.5
        aligned = xy_err < self.grasp_tol_m
        at_height = delta[..., 2].abs() < self.grasp_tol_m

        # Desired TCP displacement per phase (m): approach at hover height, descend once aligned,
        # lift straight up once the closed fingers hold the cube.
        goal = delta.clone()
        goal[..., 2] = torch.where(aligned, delta[..., 2], delta[..., 2] + self.hover_m)
        lifting = closed & near
        goal[..., 2] = torch.where(lifting, torch.full_like(goal[..., 2], 1.0), goal[..., 2])
        goal[..., :2] = torch.where(lifting.unsqueeze(-1), torch.zeros_like(goal[..., :2]), goal[..., :2])
        # closed but holding nothing: open and back off upward before retrying
        retreat = closed & ~near
        goal[..., 2] = torch.where(retreat, torch.full_like(goal[..., 2], 0.05), goal[..., 2])

        move = (self.gain * goal / self.action_scale_m).clamp(-1.0, 1.0)
        if self.noise_std > 0:
            move = move + self.noise_std * torch.randn(move.shape, generator=self.generator,
                                                       dtype=move.dtype).to(move.device)
        grip_cmd = torch.where(closed, torch.where(near, 1.0, -1.0),
                               torch.where(aligned & at_height, 1.0, -1.0)).to(move.dtype)
        # hold position while the fingers close
        move = torch.where((aligned & at_height & ~closed).unsqueeze(-1), torch.zeros_like(move), move)
        td.set("action", torch.cat([move, grip_cmd.unsqueeze(-1)], dim=-1).clamp(-1.0, 1.0))
        return td
