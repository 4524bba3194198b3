"""torchrl-serl: SERL's sample-efficient robotic RL as a TorchRL extension."""

__version__ = "0.1.0"
