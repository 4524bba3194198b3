"""The losses stand alone: importing them pulls in no simulator, no gym, no env of this package."""

import subprocess
import sys

# TorchRL's own ``import torchrl.objectives`` imports MuJoCo when it is installed (its
# torchrl.envs.custom MuJoCo envs), so the check is what torchrl_serl.objectives adds on top.
CHECK = """
import sys
import torchrl.objectives
before = set(sys.modules)
import {module}
added = set(sys.modules) - before
heavy = sorted(m for m in added if m.split(".")[0] in ("mujoco", "gymnasium", "gym") or m.startswith("torchrl_serl.envs"))
print("heavy", heavy)
import gymnasium
ours = sorted(i for i, spec in gymnasium.registry.items() if "torchrl_serl" in str(spec.entry_point))
print("registered", ours)
"""


def _imports(module: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)], capture_output=True, text=True, timeout=300, check=True
    ).stdout.splitlines()
    return out[-2], out[-1]


def test_objectives_import_no_simulator_gym_or_envs():
    heavy, registered = _imports("torchrl_serl.objectives")
    assert heavy == "heavy []"
    assert registered == "registered []"


def test_the_check_sees_envs_imports():
    heavy, registered = _imports("torchrl_serl.envs")
    assert "gymnasium" in heavy and "torchrl_serl.envs" in heavy
    assert "PandaPickCube" in registered or "PickCube" in registered
