"""Headless backend selection and the error a user sees without one."""

import mujoco
import pytest

from torchrl_serl.envs.sim import rendering
from torchrl_serl.envs.sim.rendering import CameraRenderer, select_gl_backend


def test_select_gl_backend_respects_the_user_choice(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert select_gl_backend() == "osmesa"


def test_select_gl_backend_picks_a_loadable_library(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "_loadable", lambda libs: "libOSMesa.so.6" in libs)
    assert select_gl_backend() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "_loadable", lambda libs: False)
    assert select_gl_backend() is None


def test_missing_gl_raises_with_install_hint(monkeypatch):
    def no_context(*args, **kwargs):
        raise mujoco.FatalError("gladLoadGL error")

    monkeypatch.setattr(mujoco, "Renderer", no_context)
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    renderer = CameraRenderer(model, 16, 16)
    with pytest.raises(RuntimeError, match="apt-get install libegl1"):
        renderer.render(mujoco.MjData(model), "front")


def test_cheap_flags_and_close():
    from torchrl_serl.envs import PandaPickCubeEnv

    cheap = PandaPickCubeEnv(pixels=True, image_size=32)
    full = PandaPickCubeEnv(pixels=True, image_size=32, render_full_quality=True)
    try:
        cheap.reset()
        full.reset()
        flags = mujoco.mjtRndFlag
        assert not cheap._renderer._renderer.scene.flags[flags.mjRND_SHADOW]
        assert full._renderer._renderer.scene.flags[flags.mjRND_SHADOW]
    finally:
        cheap.close()
        full.close()
    assert cheap._renderer._renderer is None
