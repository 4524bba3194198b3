"""DrQ on the Franka pick-cube task: the simulated Panda by default, the real robot on request.

The training loop is ``drq_sim.py``'s; only the task differs. On the real robot the arm is driven
through franky (libfranka) at ``--robot.address`` (the FCI host), images come from two cameras
(``--robot.camera realsense --robot.camera_ids <front_serial>,<wrist_serial>``) and a human can
correct the policy with a SpaceMouse (interventions go to the demo side, HIL-SERL style).

    python recipes/drq_franka.py                                  # simulation
    python recipes/drq_franka.py --robot.real true --robot.address 172.16.0.2 \\
        --demos demos/franka_real --intervention spacemouse
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drq_sim import Config, main

from torchrl_serl.training.config import EnvConfig


@dataclass
class FrankaConfig(Config):
    env: EnvConfig = field(default_factory=lambda: EnvConfig(task="panda", pixels=True))


if __name__ == "__main__":
    main(config_cls=FrankaConfig, recipe="drq_franka", description=__doc__)
