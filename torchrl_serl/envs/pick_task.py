"""The pick-cube task's interface: one definition of its specs and action checks for the simulated
(:class:`~torchrl_serl.envs.sim.pick_cube.PickCubeEnv`) and the real-arm
(:class:`~torchrl_serl.envs.robots.arm_env.RealArmEnv`) envs, so one policy moves between them.

Keys (``docs/conventions.md``):

- ``action`` float32 ``[4]`` in ``[-1, 1]``: ``dx, dy, dz`` move the tool target by ``action *
  action_scale_m`` (m); ``g`` updates the gripper command ``gripper <- clip(gripper + g, 0, 1)``
  (0 open, 1 closed);
- ``observation`` float32: ``[10]`` = block_pos, gripper, tcp_pos, tcp_vel (simulated state tasks)
  or ``[7]`` = tcp_pos, tcp_vel, gripper (pixel tasks and the real arms); one uint8 ``[3, H, W]``
  image per camera (``front``, ``wrist``);
- ``success``, ``done``, ``terminated``, ``truncated`` bool ``[1]``; ``reward`` float32 ``[1]``;
- with ``pose_keys`` (pixel tasks and real arms), the tool pose for SERL's pose wrappers
  (:class:`~torchrl_serl.envs.transforms.RelativeFrame`, :class:`~torchrl_serl.envs.transforms.QuatToEuler`):
  ``tcp_pose`` float32 ``[7]`` = position (m) + orientation quaternion ``[x, y, z, w]``, ``tcp_vel``
  float32 ``[3]`` (m/s) and ``gripper`` float32 ``[1]``, the entries of ``observation`` one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

ACTION_SIZE = 4
STATE_OBSERVATION_SIZE = 10  # block_pos (3), gripper (1), tcp_pos (3), tcp_vel (3)
PROPRIO_OBSERVATION_SIZE = 7  # tcp_pos (3), tcp_vel (3), gripper (1)
POSE_KEYS = {"tcp_pose": 7, "tcp_vel": 3, "gripper": 1}  # xyz + xyzw quaternion, m/s, closure


def set_pick_task_specs(env: EnvBase, observation_size: int, camera_keys: Sequence[str],
                        image_hw: tuple[int, int], pose_keys: bool = False) -> None:
    """Give ``env`` the task's observation, action, reward and done specs, on ``env.device``.

    Args:
        env: an unbatched env.
        observation_size: :data:`STATE_OBSERVATION_SIZE` or :data:`PROPRIO_OBSERVATION_SIZE`.
        camera_keys: one uint8 ``[3, H, W]`` image entry per name.
        image_hw: ``(H, W)`` of the images [px].
        pose_keys: also the :data:`POSE_KEYS` entries (proprioception only).
    """
    if observation_size not in (STATE_OBSERVATION_SIZE, PROPRIO_OBSERVATION_SIZE):
        raise ValueError(f"observation_size must be {STATE_OBSERVATION_SIZE} (state) or "
                         f"{PROPRIO_OBSERVATION_SIZE} (proprioception), got {observation_size}")
    if pose_keys and observation_size != PROPRIO_OBSERVATION_SIZE:
        raise ValueError("pose_keys=True needs the proprioceptive observation (pixel tasks, real arms): "
                         "the state task's observation holds the cube")
    device = env.device
    obs = {"observation": Unbounded((observation_size,), dtype=torch.float32, device=device),
           "success": Categorical(2, (1,), dtype=torch.bool, device=device)}
    if pose_keys:
        obs.update({key: Unbounded((size,), dtype=torch.float32, device=device) for key, size in POSE_KEYS.items()})
    for key in camera_keys:
        obs[key] = Bounded(0, 255, (3, *image_hw), dtype=torch.uint8, device=device)
    env.observation_spec = Composite(obs, device=device)
    env.action_spec = Bounded(-1.0, 1.0, (ACTION_SIZE,), dtype=torch.float32, device=device)
    env.reward_spec = Unbounded((1,), dtype=torch.float32, device=device)
    env.full_done_spec = Composite(
        {key: Categorical(2, (1,), dtype=torch.bool, device=device) for key in ("done", "terminated", "truncated")},
        device=device,
    )


def check_pick_action(action) -> list[float]:
    """A step's ``action`` as 4 Python floats clipped to ``[-1, 1]``, checked before any simulator or arm sees it.

    Raises ``ValueError`` naming the problem, in this order:

    - no action (``None``);
    - a dtype that is not floating point: a policy emits floats, so a bool, integer or complex
      action is a bug upstream (a wrong key, a discrete head); ``True`` would pass as 1.0 and an
      imaginary NaN would vanish in a cast;
    - a shape other than ``(4,)``;
    - a NaN or inf entry.

    Finite values outside ``[-1, 1]`` are clipped, as SERL's envs do (a scripted or human action
    may overshoot; a tanh policy never does). Any float width (float16, bfloat16, float32, float64)
    is accepted; torch tensors, NumPy arrays and sequences of Python floats all work.
    """
    if action is None:
        raise ValueError("the input tensordict has no 'action' entry")
    if isinstance(action, torch.Tensor):
        dtype, floating, shape = action.dtype, action.is_floating_point(), tuple(action.shape)
    else:
        action = np.asarray(action)
        dtype, floating, shape = action.dtype, action.dtype.kind == "f", action.shape
    if not floating:
        raise ValueError(f"action must be floating point (float16/32/64), got dtype {dtype}; a bool, integer or "
                         "complex action is refused before the simulator or the arm sees it")
    if shape != (ACTION_SIZE,):
        raise ValueError(f"action must have shape ({ACTION_SIZE},) = (dx, dy, dz, gripper), got {shape}")
    values = action.detach().cpu().tolist() if isinstance(action, torch.Tensor) else action.tolist()
    values = [float(x) for x in values]  # float16/32 -> float64 is exact
    if not all(map(math.isfinite, values)):
        raise ValueError(f"action must be finite (no NaN/inf), got {values}")
    return [min(max(x, -1.0), 1.0) for x in values]
