"""Optional higher-fidelity robot models from a local MuJoCo Menagerie checkout (``MENAGERIE_ROOT``)."""

from __future__ import annotations

import os

import mujoco

MENAGERIE_ENV_VAR = "MENAGERIE_ROOT"


def attach_menagerie_model(world: mujoco.MjsBody, spec: mujoco.MjSpec, root: str, relpath: str,
                           prefix: str) -> None:
    """Attach ``root/relpath`` under ``world`` with names prefixed by ``prefix``.

    The model's own actuators and keyframes are dropped: the task adds the actuators its
    controller needs, and keyframes would not match the scene's ``qpos``. Meshes resolve relative
    to the model file.
    """
    path = os.path.join(root, relpath)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{MENAGERIE_ENV_VAR}={root!r} has no {relpath}; point it at a mujoco_menagerie checkout "
            f"or unset it to use the built-in model"
        )
    child = mujoco.MjSpec.from_file(path)
    # absolute asset paths survive the attach into a spec that lives elsewhere
    child.meshdir = os.path.join(os.path.dirname(path), child.meshdir or "")
    child.texturedir = os.path.join(os.path.dirname(path), child.texturedir or "")
    for act in list(child.actuators):
        child.delete(act)
    for key in list(child.keys):
        child.delete(key)
    child.nkey = spec.nkey  # the <size nkey> of the file would conflict with the scene's
    frame = world.add_frame()
    spec.attach(child, prefix=prefix, frame=frame)
