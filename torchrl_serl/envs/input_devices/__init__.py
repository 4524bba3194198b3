"""Human input devices that drive an arm through the :class:`~torchrl_serl.envs.transforms.Intervention` transform.

Each is an ``InterventionSource``: ``poll() -> Tensor [A] | None`` (None: the human is not intervening).
"""

from torchrl_serl.envs.input_devices.keyboard import DEFAULT_KEY_MAP, KeyboardSource, TerminalKeyReader
from torchrl_serl.envs.input_devices.spacemouse import SpaceMouseSource

__all__ = ["DEFAULT_KEY_MAP", "KeyboardSource", "SpaceMouseSource", "TerminalKeyReader"]
