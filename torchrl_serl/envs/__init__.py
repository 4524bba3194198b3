"""Environments: simulated pick-cube tasks (``sim``), real arms (``robots``), transforms."""

from torchrl_serl.envs.sim.gym_registration import register_gym_envs
from torchrl_serl.envs.sim.panda_pick_cube import PandaPickCubeEnv
from torchrl_serl.envs.sim.pick_cube import PickCubeEnv
from torchrl_serl.envs.sim.piper_pick_cube import PiperPickCubeEnv
from torchrl_serl.envs.sim.scripted import ScriptedPickPolicy
from torchrl_serl.envs.sim.video import record_video

register_gym_envs()

__all__ = [
    "PandaPickCubeEnv",
    "PickCubeEnv",
    "PiperPickCubeEnv",
    "ScriptedPickPolicy",
    "record_video",
    "register_gym_envs",
]
