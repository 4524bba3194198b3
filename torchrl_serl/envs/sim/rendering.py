"""Headless OpenGL backend selection and a cheap offscreen camera renderer."""

from __future__ import annotations

import ctypes
import os

_BACKEND_LIBS = {
    "egl": ("libEGL.so.1", "libEGL.so"),
    "osmesa": ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"),
}
INSTALL_HINT = (
    "install an offscreen OpenGL library: `apt-get install libegl1` (then MUJOCO_GL=egl) or "
    "`apt-get install libosmesa6` (then MUJOCO_GL=osmesa)"
)


def _loadable(names: tuple[str, ...]) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def select_gl_backend() -> str | None:
    """Pick ``MUJOCO_GL`` when the user has not: egl, else osmesa. Must run before ``import mujoco``
    (mujoco reads the variable at import). Returns the backend, or ``None`` if none is loadable."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    for backend, libs in _BACKEND_LIBS.items():
        if _loadable(libs):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    return None


class CameraRenderer:
    """One ``mujoco.Renderer`` for all cameras of an env, created on first use (so an env can be
    built in a parent process and rendered in a ``ParallelEnv`` worker). Shadows, reflections and
    the skybox are off unless ``full_quality`` (~5x cheaper at 128x128). Call :meth:`close`."""

    def __init__(self, model, height: int, width: int, full_quality: bool = False):
        self.model, self.height, self.width, self.full_quality = model, height, width, full_quality
        self._renderer = None

    def _make(self):
        import mujoco

        try:
            renderer = mujoco.Renderer(self.model, self.height, self.width)
        except Exception as err:  # the GL error types differ per backend
            raise RuntimeError(
                f"MuJoCo could not create an offscreen OpenGL context "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): {err}. To fix, {INSTALL_HINT}."
            ) from err
        if not self.full_quality:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                renderer.scene.flags[flag] = False
        return renderer

    def render(self, data, camera: str):
        """``[H, W, 3]`` uint8 image of ``camera``."""
        if self._renderer is None:
            self._renderer = self._make()
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
