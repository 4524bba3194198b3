"""Send human-intervention transitions to the demo side of an :class:`OnlineDemoReplayBuffer`."""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from torchrl_serl.data.replay import OnlineDemoReplayBuffer


class InterventionRouter:
    """Write collected transitions to the online buffer and the human-driven ones also to the demos.

    As SERL: every transition is online experience; those flagged by
    :class:`~torchrl_serl.envs.transforms.Intervention` are, in addition, demonstrations (RLPD then
    samples them in the demo half of each batch).

    Args:
        buffer: the online + demo buffer.
        intervention_key: the flag written by ``Intervention``, bool ``[*B, 1]``.
        online: also write every transition to the online buffer (``False``: only route interventions).
    """

    def __init__(
        self,
        buffer: OnlineDemoReplayBuffer,
        intervention_key: NestedKey = ("next", "intervention"),
        online: bool = True,
    ):
        self.buffer, self.intervention_key, self.online = buffer, intervention_key, online
        self.num_routed = 0

    def extend(self, data: TensorDictBase) -> int:
        """Store a batch ``[T]`` or ``[N_envs, T]``; returns how many transitions went to the demos."""
        flag = data.get(self.intervention_key, None)
        if flag is None:
            raise KeyError(f"{self.intervention_key!r} missing: append the Intervention transform to the env")
        if self.online:
            self.buffer.extend(data)
        mask = flag.reshape(*data.shape, -1).any(-1)
        n = int(mask.sum())
        if n:
            # Boolean indexing flattens [N_envs, T]; the pixel storage splits non-consecutive rows itself.
            self.buffer.extend_demos(data[mask])
            self.num_routed += n
        return n
