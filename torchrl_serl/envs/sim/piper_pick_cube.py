"""PiperPickCube: the same task on the AgileX Piper, end-effector targets through IK."""

from __future__ import annotations

from torchrl_serl.envs.sim.pick_cube import PickCubeEnv
from torchrl_serl.envs.sim.piper import PiperSimArm


class PiperPickCubeEnv(PickCubeEnv):
    """AgileX Piper picks a 4 cm cube; same keys, action space, reward and arguments as
    :class:`PickCubeEnv` (a policy moves between this, the Panda task and the real Piper env).

    The task box is scaled to the Piper's reach: TCP x in [0.22, 0.45], y in [-0.2, 0.2],
    z in [0, 0.25] m; cube xy ~ U([0.25, -0.15], [0.40, 0.15]). The TCP keeps a fixed orientation
    30 deg from vertical (see :data:`~torchrl_serl.envs.sim.piper.PIPER_TCP_QUAT`).
    """

    def __init__(self, *args, menagerie_root: str | None = None, **kwargs):
        """``menagerie_root``: a MuJoCo Menagerie checkout (e.g. ``os.environ["MENAGERIE_ROOT"]``) to
        use its Piper model instead of the built-in one. See :class:`~torchrl_serl.envs.sim.piper.PiperSimArm`."""
        super().__init__(*args, arm=PiperSimArm(menagerie_root), **kwargs)
