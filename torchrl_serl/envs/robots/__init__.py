"""Real arms without ROS: Franka (franky) and AgileX Piper (piper-sdk), behind ``RobotArm``."""
from .arm_env import FrankaEnv, PiperEnv, RealArmEnv
from .base_server_adapter import BaseGripperServerGripper, BaseRobotServerArm
from .franka import FrankaArm, FrankaGripper, ImpedanceGains
from .interfaces import ArmState, Gripper, RobotArm, RobotConnectionError, RobotError
from .piper import PiperArm, PiperGripper
from .safety import SafetyLimits, Watchdog, stop_on_sigint

__all__ = [
    "ArmState", "BaseGripperServerGripper", "BaseRobotServerArm", "FrankaArm", "FrankaEnv", "FrankaGripper",
    "Gripper", "ImpedanceGains", "PiperArm", "PiperEnv", "PiperGripper", "RealArmEnv", "RobotArm",
    "RobotConnectionError", "RobotError", "SafetyLimits", "Watchdog", "stop_on_sigint",
]
