"""Loading the arm from a MuJoCo Menagerie checkout instead of the built-in model."""

import os

import mujoco
import numpy as np
import pytest

from torchrl_serl.envs import PandaPickCubeEnv, ScriptedPickPolicy
from torchrl_serl.envs.sim.panda import add_arm_actuators, build_panda_bodies

_TETRA_OBJ = "v 0 0 0\nv 0.02 0 0\nv 0 0.02 0\nv 0 0 0.02\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def _write_checkout(root):
    """A checkout laid out like Menagerie (``franka_emika_panda/panda.xml`` + ``assets/``) with
    Menagerie's names, a mesh, its own joint actuators and a keyframe, all of which the loader must
    handle. Its bodies are the built-in model's, so the task must behave the same."""
    folder = root / "franka_emika_panda"
    (folder / "assets").mkdir(parents=True)
    (folder / "assets" / "tetra.obj").write_text(_TETRA_OBJ)
    spec = mujoco.MjSpec()
    spec.compiler.degree = False
    spec.meshdir = str(folder / "assets")  # absolute to compile here; relative in the file
    spec.add_mesh(name="tetra", file="tetra.obj")
    build_panda_bodies(spec.worldbody, spec, prefix="")
    spec.body("hand").add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname="tetra", contype=0,
                               conaffinity=0, pos=[0, 0.05, 0])
    add_arm_actuators(spec, "", "actuator", np.full(7, 87.0))
    spec.add_key(name="home", qpos=np.zeros(9))
    spec.compile()
    xml = spec.to_xml().replace(f'meshdir="{folder / "assets"}', 'meshdir="assets')
    assert 'meshdir="assets' in xml
    (folder / "panda.xml").write_text(xml)


def test_menagerie_layout_checkout_is_attached(tmp_path):
    _write_checkout(tmp_path)
    env = PandaPickCubeEnv(menagerie_root=str(tmp_path), seed=1)
    model = env.model
    assert model.nmesh == 1 and model.nkey == 0
    # the checkout's own actuators are replaced by the task's (7 torque motors + gripper)
    names = {model.actuator(i).name for i in range(model.nu)}
    assert names == {f"panda/actuator{i}" for i in range(1, 8)} | {"panda/gripper"}
    td = env.rollout(40, ScriptedPickPolicy())
    assert td["next", "success"].any()


def test_missing_model_file_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="MENAGERIE_ROOT"):
        PandaPickCubeEnv(menagerie_root=str(tmp_path))


@pytest.mark.skipif(not os.path.isfile(os.path.join(os.environ.get("MENAGERIE_ROOT", "/nonexistent"),
                                                    "franka_emika_panda", "panda.xml")),
                    reason="needs a MuJoCo Menagerie checkout in $MENAGERIE_ROOT")
def test_real_menagerie_panda_picks_the_cube():
    env = PandaPickCubeEnv(menagerie_root=os.environ["MENAGERIE_ROOT"], seed=1)
    td = env.rollout(60, ScriptedPickPolicy())
    assert td["next", "success"].any()
