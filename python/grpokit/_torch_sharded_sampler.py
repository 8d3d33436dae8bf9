"""The sampler's truncation (top_k / top_p / min_p) and kept-set replay (keep=) on a vocabulary sharded
across ranks, for ``grpokit.torch.vocab_parallel_token_logprobs`` (docs/logprobs.md, "Vocabulary-parallel
log-probabilities"). Each rank turns its shard into a mask of its part of the kept set; the kept set's
sums are then all-reduced (O(N) values) and the backward is local.

vLLM's and SGLang's kept sets are upper sets of values intersected with min-p's test, so the ranks only
agree on per-row numbers, each with communication independent of V:

- min-p: the global raw maximum M (an all-reduce MAX of N values); kept iff (x − M)/τ ≥ log(min_p),
  evaluated in the engine's float precision, as the engine does;
- top-k: the k-th largest value, from each rank's k largest (an all-gather of N·k values per rank);
- top-p: the nucleus boundary, by the engine's most-significant-digit radix walk over order-preserving
  keys of the values: per 8-bit digit one all-reduce SUM of a per-row histogram of 256 masses (4 rounds
  for float32 logits, 8 for float64); the walk is math::nucleus_bin's (cpp/include/grpokit/math/sampler.hpp);
- keep=: the global ids of each row that fall in this rank's shard (an empty row keeps everything).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from . import _logprobs

_DIGIT = 8  # bits per radix digit of the nucleus walk
_BINS = 1 << _DIGIT


def _s64(v: int) -> int:
    """A 64-bit pattern as the signed int64 that torch stores."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def truncates(fname: str, params: tuple, keep, sum_sq_probs: bool) -> bool:
    """Whether top_k/top_p/min_p or keep= is asked for (not with Σp²)."""
    on = keep is not None or any(v is not None for v in params)
    if on and sum_sq_probs:
        raise ValueError(f"{fname}: sum_sq_probs: not available with top_k/top_p/min_p/keep")
    return on


def values(logits: torch.Tensor) -> torch.Tensor:
    """The shard as (N, V_local) in the engine's math type: float64, or float32 (16-bit logits widened)."""
    x = logits.reshape(-1, logits.shape[-1])
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def raw_max(x: torch.Tensor, group) -> torch.Tensor:
    """The rows' global raw maxima (exact: a maximum of the values themselves)."""
    m = x.amax(-1) if x.shape[0] else x.new_empty((0,))
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    return m


def global_vocab(v_local: int, group, device) -> int:
    """V = Σ_r V_local (one all-reduce of 1 value; the shards tile [0, V))."""
    v = torch.tensor([v_local], dtype=torch.int64, device=device)
    dist.all_reduce(v, group=group)
    return int(v.item())


def row_params(fname: str, shape: tuple, top_k, top_p, min_p, device) -> Tuple[Optional[torch.Tensor], ...]:
    """(k, p, min_p) as flat per-row tensors (None: off), checked as the unsharded op checks them."""
    out = []
    for name, v in (("top_k", top_k), ("top_p", top_p), ("min_p", min_p)):
        try:
            a = _logprobs._row_param(v, name, shape, name == "top_k")
        except (TypeError, ValueError) as e:
            raise type(e)(f"{fname}: {e}") from None
        if a is not None and name in _logprobs._PARAM_RANGES:
            expects, ok = _logprobs._PARAM_RANGES[name]
            bad = np.flatnonzero(~ok(a.reshape(-1)))
            if bad.size:
                raise ValueError(f"{fname}: {name}: row {bad[0]} holds {a.reshape(-1)[bad[0]]:g}; expected {expects}")
        out.append(None if a is None else torch.from_numpy(np.ascontiguousarray(a).reshape(-1)).to(device))
    return tuple(out)


def _kth_largest(x: torch.Tensor, k: torch.Tensor, vocab: int, group) -> torch.Tensor:
    """Per row the k-th largest value of the whole vocabulary (ties counted), −inf where top-k is off
    (k ≤ 0 or k ≥ V): every rank's k_max largest (−inf padded) all-gathered, then the k-th of those."""
    on = (k > 0) & (k < vocab)
    inf = torch.full_like(x[:, 0], float("-inf"))
    if not bool(on.any()):
        return inf
    kmax = int(k[on].max())
    top = torch.topk(x, min(kmax, x.shape[1]), dim=-1).values
    top = torch.cat([top, inf[:, None].expand(-1, kmax - top.shape[1])], -1).contiguous()
    every = [torch.empty_like(top) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, top, group=group)
    best = torch.topk(torch.cat(every, -1), kmax, dim=-1).values
    return torch.where(on, best.gather(1, (k.clamp(1, kmax) - 1)[:, None]).squeeze(1), inf)


def _keys(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Order-preserving keys of the values (math::RadixKeys: the unsigned pattern, held in int64) and their width."""
    if x.dtype == torch.float64:
        b = x.contiguous().view(torch.int64)
        return torch.where(b < 0, ~b, b | _s64(1 << 63)), 64
    b = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return torch.where(b >= 1 << 31, ~b & 0xFFFFFFFF, b | (1 << 31)), 32


def _value(key: torch.Tensor, width: int) -> torch.Tensor:
    """The value of a key (math::RadixKeys::value)."""
    if width == 64:
        return torch.where(key < 0, key & _s64((1 << 63) - 1), ~key).view(torch.float64)
    b = torch.where(key >= 1 << 31, key & 0x7FFFFFFF, ~key & 0xFFFFFFFF)
    return torch.where(b >= 1 << 31, b - (1 << 32), b).to(torch.int32).view(torch.float32)


def _nucleus_boundary(x, e, play, p, strict: bool, group) -> torch.Tensor:
    """Per row the largest value w whose inclusive mass Σ_{x ≥ w, in play} e reaches p·Σ_{in play} e
    (≥; > when strict), over every rank's entries in play: math::nucleus_bin digit by digit, each
    digit's per-row histogram of masses all-reduced (N·256 float64 values a round)."""
    keys, width = _keys(x)
    n = x.shape[0]
    bins = torch.arange(_BINS, device=x.device)
    prefix = torch.zeros(n, dtype=torch.int64, device=x.device)
    above = torch.zeros(n, dtype=torch.float64, device=x.device)
    target, decided = None, 0
    for shift in range(width - _DIGIT, -1, -_DIGIT):
        mine = play & ((keys & _s64(decided)) == prefix[:, None])
        digit = (keys >> shift) & (_BINS - 1)
        hist = torch.zeros(n, _BINS, dtype=torch.float64, device=x.device)
        hist.scatter_add_(1, digit, torch.where(mine, e, 0.0))
        dist.all_reduce(hist, group=group)
        if target is None:
            target = p * hist.sum(-1)
        incl = above[:, None] + hist.flip(-1).cumsum(-1).flip(-1)  # the mass of this bin and those above
        reach = (incl > target[:, None] if strict else incl >= target[:, None]) & (hist > 0)
        chosen = torch.where(reach, bins, -1).amax(-1)
        lowest = torch.where(hist > 0, bins, _BINS).amin(-1) % _BINS
        chosen = torch.where(chosen >= 0, chosen, lowest)  # none reaches it (rounding): the lowest nonempty bin
        pick = chosen[:, None]
        above = (incl.gather(1, pick) - hist.gather(1, pick)).squeeze(1)
        top = shift + _DIGIT == 64  # the sign bit's digit of a 64-bit key: as int64's signed bits
        prefix = prefix | (torch.where(chosen >= _BINS // 2, chosen - _BINS, chosen) if top else chosen) << shift
        decided |= (_BINS - 1) << shift
    return _value(prefix, width)


def truncation_mask(x, m, temperature: float, params, sampler: str, vocab: int, group) -> torch.Tensor:
    """This shard's part of the kept set of vLLM's (or SGLang's) rules (docs/logprobs.md), as a mask."""
    k, p, min_p = params
    F, n = x.dtype, x.shape[0]
    it = torch.tensor(1.0 / temperature, dtype=F, device=x.device)  # the engine's F(1/τ)
    raw = (x - m[:, None]) * it
    keep = torch.ones_like(x, dtype=torch.bool)
    if min_p is not None:
        lmp = torch.where(min_p > 0, torch.log(min_p), float("-inf")).to(F)
        keep &= raw >= lmp[:, None]
    if k is not None:
        keep &= x >= _kth_largest(x, k, vocab, group)[:, None]
    if p is not None and bool((p < 1).any()):
        lo = -88.0 if F == torch.float32 else -800.0  # math::min_exp_arg
        e = torch.exp(raw.clamp(lo, 0.0)).double()
        strict = sampler == "sglang"
        play = torch.ones_like(keep) if strict else keep  # vLLM: over the min-p / top-k survivors
        t = _nucleus_boundary(x, e, play, p, strict, group)
        keep &= x >= torch.where(p < 1, t, torch.full((n,), float("-inf"), dtype=F, device=x.device))[:, None]
    return keep


def replay_mask(fname: str, keep, n: int, start: int, size: int, vocab: Optional[int], device) -> torch.Tensor:
    """This shard's part of the replayed kept sets: keep = (keep_ids, keep_offsets) in global ids (CSR
    over the flattened rows, ascending; an empty row keeps the whole vocabulary) or vLLM's SamplingMask.
    ``vocab`` given (check=True): the pair's values are checked, with the engine's messages."""
    if hasattr(keep, "token_ids") and hasattr(keep, "offsets"):
        keep = (keep.token_ids, keep.offsets)
    if not (isinstance(keep, (tuple, list)) and len(keep) == 2):
        raise TypeError(
            f"{fname}: keep: expected (keep_ids, keep_offsets) in global vocabulary ids or an object with "
            f"token_ids and offsets (vLLM's SamplingMask), got {type(keep).__name__}"
        )
    ids, off = (torch.as_tensor(a, device=device).reshape(-1).long() for a in keep)
    if off.numel() != n + 1:
        raise ValueError(
            f"{fname}: keep_offsets: expected {n + 1} offsets (one per row of logits, plus the end), got {off.numel()}"
        )
    counts = off[1:] - off[:-1]
    if vocab is not None:
        _check_csr(fname, ids, off, counts, vocab)
    rows = torch.repeat_interleave(torch.arange(n, device=device), counts)
    local = ids - start
    inside = (local >= 0) & (local < size)
    mask = torch.zeros(n, size, dtype=torch.bool, device=device)
    mask[rows[inside], local[inside]] = True
    mask[counts == 0] = True
    return mask


def _check_csr(fname: str, ids, off, counts, vocab: int) -> None:
    if int(off[0]) != 0:
        raise ValueError(f"{fname}: keep_offsets: expected 0 first, got {int(off[0])}")
    if bool((counts < 0).any()):
        r = int(torch.nonzero(counts < 0)[0])
        raise ValueError(f"{fname}: keep_offsets: row {r} ends at {int(off[r + 1])} before it begins at {int(off[r])}")
    if int(off[-1]) != ids.numel():
        raise ValueError(
            f"{fname}: keep_offsets: the last offset is {int(off[-1])}; expected len(keep_ids) = {ids.numel()}"
        )
    rows = torch.repeat_interleave(torch.arange(counts.numel(), device=ids.device), counts)
    bad = torch.nonzero((ids < 0) | (ids >= vocab))
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{fname}: keep_ids: row {int(rows[i])} holds {int(ids[i])}, outside the vocabulary [0, {vocab})"
        )
    bad = torch.nonzero((rows[1:] == rows[:-1]) & (ids[1:] <= ids[:-1]))
    if bad.numel():
        i = int(bad[0]) + 1
        raise ValueError(
            f"{fname}: keep_ids: row {int(rows[i])} holds {int(ids[i])} after {int(ids[i - 1])}; "
            "expected strictly increasing ids"
        )


def kept_forward(x, kept, m, local, mine, temperature: float, replay: bool, group, fname: Optional[str]):
    """Global (logp, entropy of the kept distribution, log Σ_kept e, log Σ e, y kept) from every shard's
    masked sums, float64, e = exp(d), d = (x − M)/τ: one all-reduce SUM of 5·N values."""
    d = (x.double() - m.double()[:, None]) * (1.0 / temperature)
    e = torch.exp(d)
    ek = torch.where(kept, e, 0.0)
    d_y = d.gather(1, local[:, None]).squeeze(1)
    y_in = kept.gather(1, local[:, None]).squeeze(1) & mine
    if replay:  # a replayed set scores a −inf logit −inf (the engine: no gradient through it)
        y_in &= d_y > float("-inf")
    sums = torch.stack(
        [e.sum(-1), ek.sum(-1), torch.where(ek > 0, ek * d, 0.0).sum(-1), torch.where(mine, d_y, 0.0), y_in.double()]
    )
    dist.all_reduce(sums, group=group)
    s_all, s_kept, dot, d_y, y_in = sums
    if replay and fname is not None and bool((s_kept <= 0).any()):  # the same on every rank: all raise
        r = int(torch.nonzero(s_kept <= 0)[0])
        raise ValueError(f"{fname}: keep_ids: the kept set of row {r} holds no finite logit (all −inf)")
    log_s = torch.log(s_kept)
    y_kept = y_in > 0
    logp = torch.where(y_kept, torch.clamp(d_y - log_s, max=0.0), float("-inf"))
    h = torch.clamp(log_s - dot / s_kept, min=0.0)
    return logp, h, log_s, torch.log(s_all), y_kept


def kept_backward(x, kept, m, log_s, log_all, h, y_kept, local, mine, ga, gb, temperature: float, over: bool):
    """This shard's ∂L/∂x (float64) with the kept set held fixed: (a·[v = y] − a·q_v − b·r_v (log r_v + H))/τ,
    q the kept distribution, r the one the entropy H is of (q over the kept set, else the full p)."""
    d = (x.double() - m.double()[:, None]) * (1.0 / temperature)
    zero = torch.zeros_like(log_s)
    a = torch.where(y_kept, ga.double().reshape(-1), 0.0) if ga is not None else zero
    b = gb.double().reshape(-1) if gb is not None else zero
    lq = d - log_s[:, None]
    q = torch.where(kept, torch.exp(lq), 0.0)
    g = -a[:, None] * q
    lr, r = (lq, q) if over else (d - log_all[:, None], torch.exp(d - log_all[:, None]))
    g -= torch.where(r > 0, b[:, None] * r * (lr + h[:, None]), 0.0)
    g.scatter_add_(1, local[:, None], torch.where(mine & y_kept, a, 0.0)[:, None])
    return g * (1.0 / temperature)
