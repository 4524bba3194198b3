"""DrQ on the AgileX Piper pick-cube task: the simulated Piper by default, the real arm on request.

The training loop is ``drq_sim.py``'s; only the task differs. On the real arm the Piper is driven
through piper-sdk on a CAN channel (``--robot.address can0``), images come from two cameras
(``--robot.camera realsense --robot.camera_ids <front_serial>,<wrist_serial>``) and a human can
correct the policy with a SpaceMouse (interventions go to the demo side, HIL-SERL style).

    python recipes/drq_piper.py                                   # simulation
    python recipes/drq_piper.py --robot.real true --robot.address can0 \\
        --demos demos/piper_real --intervention spacemouse
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drq_sim import Config, main

from torchrl_serl.training.config import EnvConfig


@dataclass
class PiperConfig(Config):
    env: EnvConfig = field(default_factory=lambda: EnvConfig(task="piper", pixels=True))


if __name__ == "__main__":
    main(config_cls=PiperConfig, recipe="drq_piper", description=__doc__)
