"""bfloat16 only where it is native: a warning wherever a bf16 option meets emulated kernels."""
import warnings

import pytest
import torch

from torchrl_serl import precision
from torchrl_serl.modules.encoders.resnet import resnet10
from torchrl_serl.training.agent_factory import make_sac_agent
from torchrl_serl.training.config import SACConfig
from torchrl_serl.training.updater import SACUpdater, make_sac_optimizers


def test_the_cpu_answer_is_onednns_own():
    assert precision.native_bf16("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("native", [True, False])
def test_bf16_options_warn_only_where_bfloat16_is_emulated(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": native)
    cfg = SACConfig(hidden=(16, 16), num_critics=2, critic_subsample=2, utd_ratio=1)
    agent = make_sac_agent(cfg, 3, 2)
    trunk = resnet10(num_filters=4, bf16=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SACUpdater(agent.loss, make_sac_optimizers(agent.loss, cfg), agent.target_updater, 1, bf16=True)
        features = trunk(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert features.dtype == torch.float32
    if native:
        assert not any("bfloat16" in m for m in messages)
    else:
        assert any(m.startswith("SACUpdater(bf16=True)") and "emulates" in m for m in messages)
        assert any(m.startswith("the trunk's bf16") and "emulates" in m for m in messages)
