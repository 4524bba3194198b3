"""MuJoCo pick-cube tasks (Panda, Piper) built in code, as TorchRL envs."""

from torchrl_serl.envs.sim.rendering import select_gl_backend

# Before anything imports mujoco: mujoco reads MUJOCO_GL once, at import.
select_gl_backend()
