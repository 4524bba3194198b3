import math

import pytest
import torch

from torchrl_serl.optim import clip_grad_norm, make_lr_schedule, make_optimizer, warmup_cosine_decay


def _optax_warmup_cosine(step, peak, warmup, decay, init=0.0, end=0.0):
    """optax.warmup_cosine_decay_schedule written out (values in absolute LR)."""
    if step < warmup:
        return init + (peak - init) * step / warmup
    t = min(step - warmup, decay - warmup) / (decay - warmup)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))


def test_schedule_matches_optax_formula():
    peak = 3e-4
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([p], lr=peak)
    sched = make_lr_schedule(opt, warmup_steps=10, decay_steps=50, end_value=0.1)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [_optax_warmup_cosine(s, peak, 10, 50, end=0.1 * peak) for s in range(60)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[0] == 0 and lrs[10] == pytest.approx(peak) and lrs[-1] == pytest.approx(0.1 * peak)


def test_warmup_only_then_constant():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([p], lr=1.0)
    sched = make_lr_schedule(opt, warmup_steps=4)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert warmup_cosine_decay(0, 0, 10) == pytest.approx(1.0)


def test_clip_grad_norm_rescales_to_global_norm():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5
    norm = clip_grad_norm([a, b], 1.0)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([0.8]))
    assert clip_grad_norm([a, b], None) is None


def test_make_optimizer_fused_and_foreach_agree():
    torch.manual_seed(0)
    w0 = torch.randn(8, 3)
    x = torch.randn(16, 8)
    results = []
    for fused in (True, False):
        w = torch.nn.Parameter(w0.clone())
        opt = make_optimizer([w], lr=1e-2, fused=fused)
        for _ in range(5):
            opt.zero_grad()
            (x @ w).pow(2).mean().backward()
            opt.step()
        results.append(w.detach())
    torch.testing.assert_close(results[0], results[1])
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(1))], weight_decay=0.01), torch.optim.AdamW)


def test_bad_arguments_raise():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="no parameters"):
        make_optimizer([])
    with pytest.raises(ValueError, match="lr"):
        make_optimizer([p], lr=0)
    with pytest.raises(ValueError, match="decay_steps"):
        make_lr_schedule(make_optimizer([p]), warmup_steps=10, decay_steps=5)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([p], -1.0)
