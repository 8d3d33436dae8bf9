"""Random torch inputs shared by the tests (ragged response masks and log-probs, a linear-head problem),
drawn from the caller's generator in a fixed order, so every test that uses them sees the same values."""

from __future__ import annotations

import torch

import grpokit


def ragged_mask(B, T, gen, *, empty_row=False, gap=False):
    """(B, T) bool mask: row 0 full, the others random lengths 1..T; with ``empty_row`` row 2 is all
    masked, with ``gap`` every third row from row 1 loses token 1 (multi-turn tool output)."""
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    if empty_row and B > 2:
        lengths[2] = 0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    if gap and T > 3:
        mask[1::3, 1] = False
    return mask


def ragged_logprobs(B, T, gen, spread, **mask_kw):
    """(mask, lp, old): :func:`ragged_mask`, log-probs of probabilities in [0.05, 0.95) and a second
    policy's log-probs ``lp + spread·N(0, 1)``."""
    mask = ragged_mask(B, T, gen, **mask_kw)
    lp = torch.log(torch.rand(B, T, generator=gen, dtype=torch.float64) * 0.9 + 0.05)
    old = lp + spread * torch.randn(B, T, generator=gen, dtype=torch.float64)
    return mask, lp, old


def linear_head(gen, dtype, rows=37, hidden=64, vocab=1001):
    """(hidden, weight, ids) of a linear-head log-prob problem, hidden and weight rounded to ``dtype``
    (a torch dtype's name)."""
    h = torch.randn(rows, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) / 8
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    dt = getattr(torch, dtype)
    return h.to(dt), w.to(dt), ids


def numpy_policy_loss(b, spec, **kw):
    """:func:`grpokit.policy_loss` through NumPy of a batch dict's ``lp``, ``old``, ``A`` and ``mask`` (torch
    tensors), the other arguments in ``kw`` (torch tensors among them read as NumPy arrays): the
    engine's result that a torch or peer path is compared with."""
    kw = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    return grpokit.policy_loss(b["lp"].numpy(), b["old"].numpy(), b["A"].numpy(), b["mask"].numpy(), spec=spec, **kw)
