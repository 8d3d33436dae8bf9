"""Vocabulary-parallel (tensor-parallel) token log-probabilities of ``grpokit.torch`` (imported from there).

Each rank of ``group`` holds the logits (or the LM-head weight rows) of the vocabulary ids
[vocab_start, vocab_start + V_local). The engine reduces the local shard to (lse_r, H_r, z_y); the
ranks combine those with all-reduces of O(N) values, so the communication does not depend on V:

    lse = log Σ_r e^{lse_r}                              (an all-reduce MAX, then a SUM of e^{lse_r − m})
    H   = Σ_r w_r H_r − Σ_r w_r log w_r,  w_r = e^{lse_r − lse}   (mixture entropy: every term ≥ 0)
    logp = z_y − lse                                     (z_y from the one rank that holds y)

The backward needs no communication for the logits (one all-reduce of grad hidden in the linear
form): with the *global* (lse, H) saved, the engine's formula (a·[v = y] − p_v (a + b (log p_v + H))) / τ
with p_v = e^{z_v − lse} is already the full-vocabulary gradient restricted to the shard. A row whose
token lives on another rank gets local id 0 for the engine, so its column 0 carries a spurious a/τ: the
logits form rewrites column 0 from the exact formula; the linear form rewrites grad_weight[0] and takes
(a/τ)·W_0 back out of grad hidden (all O(N) or O(N·H)).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist

from . import _logprobs
from . import _torch_sharded_sampler as _sampler
from ._torch_logprobs import LogprobsOutput, _result_dtype

_FN = "grpokit.torch.vocab_parallel_token_logprobs"
_FN_LINEAR = "grpokit.torch.vocab_parallel_linear_token_logprobs"


def _shard_ids(token_ids: torch.Tensor, vocab_start: int, v_local: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(local ids for the engine — 0 where the token lives on another rank —, the in-shard mask)."""
    local = token_ids - vocab_start
    mine = (local >= 0) & (local < v_local)
    return torch.where(mine, local, torch.zeros_like(local)), mine


def _check(fname: str, token_ids, vocab_start, v_local: int, group, device, check: bool) -> Optional[int]:
    """Local argument checks; with ``check``, also that all ranks' shards tile [0, V) (all-gathered,
    2 ints per rank) and that the token ids lie in [0, V) (host syncs: graph breaks under compile).
    Returns V with ``check``, else None."""
    if not isinstance(token_ids, torch.Tensor) or token_ids.dtype not in (torch.int32, torch.int64):
        got = token_ids.dtype if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
        raise TypeError(f"{fname}: token_ids must be an int32 or int64 torch tensor, got {got}")
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, int) or vocab_start < 0:
        raise ValueError(f"{fname}: vocab_start must be an int >= 0, got {vocab_start!r}")
    if v_local < 1:
        raise ValueError(f"{fname}: this rank's vocabulary shard is empty (V_local = 0); every rank needs >= 1 id")
    if not check:
        return None
    mine = torch.tensor([vocab_start, v_local], dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    shards = sorted(tuple(s.tolist()) for s in every)
    end = 0
    for start, size in shards:
        if start != end:
            raise ValueError(
                f"{fname}: the ranks' vocabulary shards (vocab_start, V_local) = {shards} do not tile "
                f"[0, V): expected a shard starting at {end}, got {start}"
            )
        end = start + size
    if token_ids.numel():
        lo, hi = (int(v) for v in torch.aminmax(token_ids))
        if lo < 0 or hi >= end:
            raise ValueError(f"{fname}: token_ids must lie in [0, {end}) (the global vocabulary), got [{lo}, {hi}]")
    return end


def _local(op, fname: Optional[str], like: torch.Tensor, *args):
    """The engine's (logp_r, H_r, lse_r, Σ(p^r)²) of this shard, or NaNs and the engine's message when
    it refuses the shard (CPU: a NaN, an all −inf row): raising here would leave the other ranks
    waiting. ``fname`` None (check=False): no catching, the op stays in the graph under torch.compile."""
    if fname is None:
        return (*op(*args), None)
    try:
        return (*op(*args), None)
    except ValueError as e:
        nan = torch.full(like.shape[:-1], float("nan"), dtype=torch.float64, device=like.device)
        return nan, nan, nan, nan, f"{fname}: on rank {dist.get_rank()}: {e}"


def _combine(lse_r, ent_r, sq_r, z_y, mine, group, error: Optional[str], fname: Optional[str], dtype: torch.dtype):
    """Global (logp, entropy, lse, Σp²) from each rank's (lse_r, H_r, Σ(p^r)²) and the target logit
    (float64 inside); ``sq_r`` None: no Σp² (a (0,) tensor back)."""
    lse64 = lse_r.double()
    top = torch.cat(
        [lse64.reshape(-1), torch.tensor([float(error is not None)], dtype=torch.float64, device=lse64.device)]
    )
    dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)  # the row maxima, and "some rank failed"
    failed = error is not None or fname is not None and top.device.type == "cpu" and top[-1].item()
    if failed:  # (read on the CPU only: the GPU engine never raises)
        raise ValueError(error or f"{fname}: another rank's engine call refused its shard (its error is raised there)")
    m = top[:-1].view(lse64.shape)
    w = torch.exp(lse64 - m)  # in (0, 1]: e^{lse_r − m}
    target = torch.where(mine, z_y.double(), torch.zeros_like(lse64))
    rows = [w, w * ent_r.double(), -w * (lse64 - m), target]
    sums = torch.stack(rows + ([w * w * sq_r.double()] if sq_r is not None else []))
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    log_s = torch.log(sums[0])
    lse = m + log_s
    ent = (sums[1] + sums[2]) / sums[0] + log_s  # Σ w_r H_r − Σ w_r log w_r, no cancellation
    logp = torch.clamp(sums[3] - lse, max=0.0)
    sq = sums[4] / (sums[0] * sums[0]) if sq_r is not None else lse64.new_empty((0,))  # Σ_r e^{2(lse_r−lse)} Σ(p^r)²
    return logp.to(dtype), ent.to(dtype), lse.to(dtype), sq.to(dtype)


def _column0_grad(z0, mine0, lse, ent, grad_logp, grad_entropy, temperature: float) -> torch.Tensor:
    """Exact ∂L/∂logits[:, 0] of the shard (float64): (a·[y = 0] − p_0 (a + b (log p_0 + H))) / τ."""
    lp0 = z0.double() - lse.double()
    p0 = torch.exp(lp0)
    a = grad_logp.double() if grad_logp is not None else torch.zeros_like(lp0)
    coef = a + (grad_entropy.double() * (lp0 + ent.double()) if grad_entropy is not None else 0.0)
    minus = torch.where(p0 > 0, p0 * coef, torch.zeros_like(p0))  # −inf logit: 0, never NaN
    return (torch.where(mine0, a, torch.zeros_like(a)) - minus) / temperature


class _VocabParallelLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, token_ids, vocab_start, group, temperature, sum_sq, fname):
        local, mine = _shard_ids(token_ids, vocab_start, logits.shape[-1])
        op = torch.ops.grpokit.token_logprobs
        _, ent_r, lse_r, sq_r, error = _local(op, fname, logits, logits, local, temperature, sum_sq, False)
        z_y = torch.gather(logits, -1, local.long().unsqueeze(-1)).squeeze(-1).double() / temperature
        sq_r = sq_r if sum_sq else None
        logp, ent, lse, sq = _combine(lse_r, ent_r, sq_r, z_y, mine, group, error, fname, _result_dtype(logits))
        ctx.save_for_backward(logits, local, mine, lse, ent)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(lse, sq)
        return logp, ent, lse, sq

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, _g_lse, _g_sq):
        logits, local, mine, lse, ent = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        t = ctx.temperature
        grad = torch.ops.grpokit.token_logprobs_backward(logits, local, lse, ent, grad_logp, grad_entropy, t)
        z0 = logits[..., 0].double() / t
        grad[..., 0] = _column0_grad(z0, mine & (local == 0), lse, ent, grad_logp, grad_entropy, t).to(grad.dtype)
        return grad, None, None, None, None, None, None


class _VocabParallelLinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, token_ids, vocab_start, group, temperature, chunk_size, sum_sq, fname):
        local, mine = _shard_ids(token_ids, vocab_start, weight.shape[0])
        op = torch.ops.grpokit.linear_token_logprobs
        logp_r, ent_r, lse_r, sq_r, error = _local(
            op, fname, hidden, hidden, weight, local, temperature, chunk_size, sum_sq
        )
        z_y = logp_r.double() + lse_r.double()  # the engine's own target logit (not recomputed: O(N·H))
        sq_r = sq_r if sum_sq else None
        logp, ent, lse, sq = _combine(lse_r, ent_r, sq_r, z_y, mine, group, error, fname, _result_dtype(hidden))
        ctx.save_for_backward(hidden, weight, local, mine, lse, ent)
        ctx.group, ctx.temperature, ctx.chunk_size = group, temperature, chunk_size
        ctx.mark_non_differentiable(lse, sq)
        return logp, ent, lse, sq

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, _g_lse, _g_sq):
        hidden, weight, local, mine, lse, ent = ctx.saved_tensors
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_h or want_w):
            return None, None, None, None, None, None, None, None, None
        t = ctx.temperature
        gh, gw = torch.ops.grpokit.linear_token_logprobs_backward(
            hidden, weight, local, lse, ent, grad_logp, grad_entropy, t, ctx.chunk_size, want_h, want_w
        )
        h = hidden.reshape(-1, hidden.shape[-1])
        flat = lambda x: x.reshape(-1) if x is not None else None  # noqa: E731
        if want_w:
            z0 = (h.double() @ weight[0].double()) / t
            g0 = _column0_grad(
                z0, flat(mine & (local == 0)), flat(lse), flat(ent), flat(grad_logp), flat(grad_entropy), t
            )
            gw[0] = (g0 @ h.double()).to(gw.dtype)
        if want_h:
            if grad_logp is not None:  # the spurious a/τ at column 0 of rows whose token is elsewhere
                a_out = torch.where(flat(mine), 0.0, flat(grad_logp).double() / t)
                gh = gh - (a_out[:, None] * weight[0].double()).to(gh.dtype).reshape(gh.shape)
            dist.all_reduce(gh, op=dist.ReduceOp.SUM, group=ctx.group)
        return (gh if want_h else None), (gw if want_w else None), None, None, None, None, None, None, None


class _VocabParallelSamplerLogprobs(torch.autograd.Function):
    """Under a kept set given as this shard's mask (truncation or replay, _torch_sharded_sampler): the
    engine's untruncated pass for the full entropy (and its checks), then the kept set's sums."""

    @staticmethod
    def forward(ctx, logits, token_ids, kept, m, vocab_start, group, temperature, replay, over, fname):
        local, mine = _shard_ids(token_ids, vocab_start, logits.shape[-1])
        op = torch.ops.grpokit.token_logprobs
        _, ent_r, lse_r, _, error = _local(op, fname, logits, logits, local, temperature, False, False)
        no_target = torch.zeros_like(lse_r, dtype=torch.float64)
        _, ent, _, _ = _combine(lse_r, ent_r, None, no_target, mine, group, error, fname, torch.float64)
        local, mine, ent = local.reshape(-1).long(), mine.reshape(-1), ent.reshape(-1)
        x = _sampler.values(logits)
        logp, h, log_s, log_all, y_kept = _sampler.kept_forward(
            x, kept, m, local, mine, temperature, replay, group, fname
        )
        h = h if over else ent
        ctx.save_for_backward(logits, kept, m, log_s, log_all, h, y_kept, local, mine)
        ctx.temperature, ctx.over = temperature, over
        dt, lead = _result_dtype(logits), logits.shape[:-1]
        return logp.to(dt).reshape(lead), h.to(dt).reshape(lead)

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        if not ctx.needs_input_grad[0]:
            return (None,) * 10
        logits, kept, m, log_s, log_all, h, y_kept, local, mine = ctx.saved_tensors
        x = _sampler.values(logits)
        g = _sampler.kept_backward(
            x, kept, m, log_s, log_all, h, y_kept, local, mine, grad_logp, grad_entropy, ctx.temperature, ctx.over
        )
        return (g.to(logits.dtype).reshape(logits.shape),) + (None,) * 9


class _SumGradOverRanks(torch.autograd.Function):
    """The identity forward; the backward all-reduces the gradient (hidden feeds every rank's shard)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g, group=ctx.group)
        return g, None


def _sampler_logprobs(
    fname, logits, token_ids, vocab_start, group, temperature, params, sampler, keep, entropy, vocab, check
):
    """The vocabulary-parallel log-probabilities under top_k/top_p/min_p or keep=: this shard's kept
    mask (_torch_sharded_sampler), then the op."""
    over = _logprobs._entropy_over(entropy)
    x = _sampler.values(logits.detach())
    n, size, dev = x.shape[0], x.shape[1], logits.device
    m = _sampler.raw_max(x, group)
    if keep is not None:
        if any(v is not None for v in params):
            raise ValueError(f"{fname}: keep: replays the sampler's kept set; pass it or top_k/top_p/min_p, not both")
        kept = _sampler.replay_mask(fname, keep, n, vocab_start, size, vocab, dev)
    else:
        params = _sampler.row_params(fname, tuple(logits.shape[:-1]), *params, dev)
        vocab = vocab if vocab is not None else _sampler.global_vocab(size, group, dev)
        kept = _sampler.truncation_mask(x, m, temperature, params, sampler, vocab, group)
    logp, ent = _VocabParallelSamplerLogprobs.apply(
        logits,
        token_ids,
        kept,
        m,
        vocab_start,
        group,
        temperature,
        keep is not None,
        over == "sampler",
        fname if check else None,
    )
    return LogprobsOutput(logp, ent if over else None, None)


def vocab_parallel_token_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    vocab_start: int,
    group: Optional[dist.ProcessGroup] = None,
    temperature: float = 1.0,
    entropy=True,
    sum_sq_probs: bool = False,
    top_k=None,
    top_p=None,
    min_p=None,
    sampler: str = "vllm",
    keep=None,
    check: bool = True,
) -> LogprobsOutput:
    """Differentiable per-token log-probabilities and entropies over a vocabulary sharded across ranks.

    This rank's ``logits`` (N, V_local) or (B, T, V_local) are the columns [vocab_start,
    vocab_start + V_local) of the full (…, V) logits; every rank of ``group`` (default: the world)
    calls with the same ``token_ids`` (global ids) and its own shard. Returns, on every rank, what
    :func:`grpokit.torch.token_logprobs` returns for the full logits; the backward gives this rank's
    shard of the full gradient. Communication: 2 ints per rank (the shard check), an all-reduce MAX of
    N + 1 values and an all-reduce SUM of 4·N values (float64) — independent of V — in the forward;
    none in the backward. ``token_ids`` must be the same on every rank (not checked).

    The shards must tile [0, V) (any rank order, uneven sizes allowed) and every row of every shard
    must hold a finite logit (the engine refuses an all −inf row).

    Args:
        vocab_start: the first global vocabulary id of this rank's shard.
        group: the tensor-parallel process group (``None``: the default group).
        temperature, entropy, sum_sq_probs: as in :func:`grpokit.torch.token_logprobs` (Σp² adds one
            row, Σ_r e^{2(lse_r − m)} Σ(p^r)², to the SUM all-reduce).
        top_k, top_p, min_p, sampler: the sampler's truncation, as in :func:`grpokit.torch.token_logprobs`
            (the same values, −inf outside the kept set, entropies and gradients as the unsharded op on
            the gathered logits); the ranks agree on the kept set with communication independent of V
            (docs/logprobs.md). Not under ``torch.compile`` without graph breaks (host syncs).
        keep: the sampler's kept set replayed, ``(keep_ids, keep_offsets)`` in **global** vocabulary
            ids or vLLM's ``SamplingMask`` (every rank passes the same; each uses the ids in its shard).
        check: check that the ranks' shards tile [0, V) and the ids lie in it (one all-gather of 2
            ints per rank), and make an engine refusal on one rank (CPU: a NaN, an all −inf row) a
            ``ValueError`` on every rank instead of a hang. Each costs a host sync (a graph break
            under ``torch.compile``); ``check=False`` skips them: no graph break from grpokit.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{_FN}: logits must be a torch tensor, got {type(logits).__name__}")
    over = _logprobs._entropy_over(entropy)
    temperature, sampler = _logprobs.sampler_options(temperature, sampler)
    vocab = _check(_FN, token_ids, vocab_start, int(logits.shape[-1]), group, logits.device, check)
    params = (top_k, top_p, min_p)
    if _sampler.truncates(_FN, params, keep, sum_sq_probs):
        args = (temperature, params, sampler, keep, entropy, vocab, check)
        return _sampler_logprobs(_FN, logits, token_ids, vocab_start, group, *args)
    logp, ent, _, sq = _VocabParallelLogprobs.apply(
        logits, token_ids, vocab_start, group, temperature, bool(sum_sq_probs), _FN if check else None
    )
    return LogprobsOutput(logp, ent if over else None, sq if sum_sq_probs else None)


def vocab_parallel_linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    vocab_start: int,
    group: Optional[dist.ProcessGroup] = None,
    temperature: float = 1.0,
    entropy=True,
    sum_sq_probs: bool = False,
    chunk_size: Optional[int] = None,
    top_k=None,
    top_p=None,
    min_p=None,
    sampler: str = "vllm",
    keep=None,
    check: bool = True,
) -> LogprobsOutput:
    """:func:`vocab_parallel_token_logprobs` of ``hidden · weightᵀ`` where ``weight`` (V_local, H) is this
    rank's rows [vocab_start, vocab_start + V_local) of the LM head, never materialising the logits.

    ``hidden`` (N, H) or (B, T, H) is the same on every rank. The gradient of ``weight`` is this rank's
    shard of the full one (local); the gradient of ``hidden`` is the full one on every rank (one
    all-reduce of N·H values in the backward), so do not all-reduce it again (e.g. through Megatron's
    ``copy_to_tensor_model_parallel_region``). ``chunk_size``: as in
    :func:`grpokit.torch.linear_token_logprobs`; the other arguments as in :func:`vocab_parallel_token_logprobs`.

    With ``top_k``/``top_p``/``min_p`` or ``keep`` this rank's logits ``hidden · weightᵀ`` (N, V_local)
    are materialised (a PyTorch matmul; its autograd gives the gradients, grad hidden all-reduced)
    and the logits form runs on them.
    """
    fname = _FN_LINEAR
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fname}: {name} must be a torch tensor, got {type(t).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{fname}: weight must be (V_local, H), got shape {tuple(weight.shape)}")
    vocab = _check(fname, token_ids, vocab_start, int(weight.shape[0]), group, hidden.device, check)
    chunk = _logprobs._chunk(chunk_size)
    temperature, sampler = _logprobs.sampler_options(temperature, sampler)
    params = (top_k, top_p, min_p)
    if _sampler.truncates(fname, params, keep, sum_sq_probs):
        logits = _SumGradOverRanks.apply(hidden, group) @ weight.transpose(0, 1)
        args = (temperature, params, sampler, keep, entropy, vocab, check)
        return _sampler_logprobs(fname, logits, token_ids, vocab_start, group, *args)
    logp, ent, _, sq = _VocabParallelLinearLogprobs.apply(
        hidden,
        weight,
        token_ids,
        vocab_start,
        group,
        temperature,
        chunk,
        bool(sum_sq_probs),
        fname if check else None,
    )
    return LogprobsOutput(logp, ent if _logprobs._entropy_over(entropy) else None, sq if sum_sq_probs else None)
