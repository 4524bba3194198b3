"""PandaPickCube: SERL franka_sim's task on the code-built Panda (operational-space control)."""

from __future__ import annotations

from torchrl_serl.envs.sim.panda import PandaSimArm
from torchrl_serl.envs.sim.pick_cube import PickCubeEnv


class PandaPickCubeEnv(PickCubeEnv):
    """Franka Panda picks a 4 cm cube; see :class:`PickCubeEnv` for keys, reward and arguments.

    The task of SERL's franka_sim: 0.1 m per action unit, box x in [0.2, 0.6], y in [-0.3, 0.3],
    z in [0, 0.5] m, cube xy ~ U([0.25, -0.25], [0.55, 0.25]), 2 ms physics. Not franka_sim's: the
    hand (Franka hand; franka_sim a Robotiq 2F-85), the cube's mass (0.05 kg; 0.1 kg) and the
    default control rate, 10 Hz (50 substeps: SERL's real-arm rate) where franka_sim steps at
    50 Hz (``control_dt=0.02``, 10 substeps; ``control_hz=50`` here), so a 100-step episode lasts
    10 s here and 2 s there.

    Examples:
        >>> env = PandaPickCubeEnv(seed=0)
        >>> td = env.rollout(5)
        >>> td["next", "observation"].shape
        torch.Size([5, 10])
    """

    def __init__(self, *args, controller: str = "osc", menagerie_root: str | None = None, **kwargs):
        """``controller``: ``"osc"`` (SERL franka_sim, default) or ``"impedance"`` (faster).
        ``menagerie_root``: a MuJoCo Menagerie checkout (e.g. ``os.environ["MENAGERIE_ROOT"]``) to
        use its Panda model instead of the built-in one. See :class:`~torchrl_serl.envs.sim.panda.PandaSimArm`."""
        super().__init__(*args, arm=PandaSimArm(controller, menagerie_root), **kwargs)
