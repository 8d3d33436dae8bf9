"""PyTorch autograd functions over the grpokit engine (``import grpokit.torch``).

Every function here takes and returns torch tensors on the tensors' own device; the forward and the
backward run in the engine (CPU or CUDA, on the current stream), zero-copy through DLPack.

Sections: token log-probabilities from logits and from hidden states (``torch.library`` custom ops,
in ``_torch_logprobs.py`` and ``_torch_linear_logprobs.py``; with the full KL against a reference in
``_torch_logprobs_kl.py``); the policy loss (a custom op), its rewards form, and the global counts for
gradient accumulation and data parallelism. Every op has a fake implementation, so all of them run under
``torch.compile`` without a graph break.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from . import _advantages, _arguments, _arrays, _core, _loss, _presets
from ._torch_linear_logprobs import linear_token_logprobs
from ._torch_logprobs import LogprobsOutput, refuse_double_backward, token_logprobs
from ._torch_logprobs_kl import LogprobsKLOutput, token_logprobs_kl
from ._torch_sharded import vocab_parallel_linear_token_logprobs, vocab_parallel_token_logprobs

__all__ = [
    "LogprobsKLOutput",
    "LogprobsOutput",
    "PolicyLossOutput",
    "global_counts",
    "linear_token_logprobs",
    "policy_loss",
    "policy_loss_from_rewards",
    "token_logprobs",
    "token_logprobs_kl",
    "vocab_parallel_linear_token_logprobs",
    "vocab_parallel_token_logprobs",
]


# ---- the policy loss -------------------------------------------------------------------------------
#
# One torch.library custom op, ``grpokit::policy_loss``: the engine computes the loss and its exact
# gradient in one pass (forward); the registered backward scales the saved gradient by the incoming
# one. Being a custom op with a fake implementation, it is opaque to torch.compile (no graph break),
# and its autograd formula is a torch.autograd.Function that torch builds from register_autograd.


@functools.lru_cache(maxsize=64)  # bounded: per-step counts (num_items_in_batch) make new specs every step
def _spec_of(spec_json: str) -> _presets.LossSpec:
    return _presets.LossSpec(**json.loads(spec_json))


def _metric_names(spec_json: str, has_entropies: bool, has_sampling: bool) -> List[str]:
    return list(_core.loss_metric_names(_spec_of(spec_json).engine_fields(), has_entropies, has_sampling))


def _policy_loss_engine(
    logp: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    entropies: Optional[torch.Tensor],
    sampling_logp: Optional[torch.Tensor],
    keep: Optional[torch.Tensor],
    token_weights: Optional[torch.Tensor],
    cu_seqlens: Optional[torch.Tensor],
    spec: str,
    selection: Optional[torch.Tensor] = None,
    return_per_token: bool = False,
    return_weights: bool = False,
    num_threads: int = 0,
    stream: Optional[int] = None,
    check_finite: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r = _loss.policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        spec=_spec_of(spec),
        ref_logp=ref_logp,
        entropies=entropies,
        sampling_logp=sampling_logp,
        keep=keep,
        token_weights=token_weights,
        cu_seqlens=cu_seqlens,
        selection=selection,
        return_per_token=return_per_token,
        return_weights=return_weights,
        num_threads=num_threads,
        stream=stream,
        check_finite=check_finite,
    )
    metrics = torch.stack(list(r.metrics.values())) if r.metrics else logp.new_zeros((0,), dtype=torch.float64)

    def given(x: Optional[torch.Tensor]) -> torch.Tensor:  # custom ops return no None
        return logp.new_zeros((0,)) if x is None else x

    return r.loss, r.grad_logp, given(r.grad_entropy), metrics, given(r.per_token), given(r.weights)


# The op's arguments, in its schema's order (torch infers the schema from these annotations).
_policy_loss_op = torch.library.custom_op("grpokit::policy_loss", mutates_args=())(_policy_loss_engine)
_OP_SIGNATURE = inspect.signature(_policy_loss_engine)
_OP_TENSORS = [p.name for p in _OP_SIGNATURE.parameters.values() if "Tensor" in str(p.annotation)]
_ARG_INDEX = {name: k for k, name in enumerate(_OP_SIGNATURE.parameters)}


@_policy_loss_op.register_fake
def _(*args, **kwargs):
    bound = _OP_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    logp, spec, entropies = a["logp"], a["spec"], a["entropies"]
    fields = _spec_of(spec).engine_fields()
    has_grad_ent = entropies is not None and _core.loss_has_entropy_grad(fields, True)
    n = len(_metric_names(spec, entropies is not None, a["sampling_logp"] is not None))
    like = lambda wanted: logp.new_empty(logp.shape if wanted else (0,))  # noqa: E731
    return (
        logp.new_empty(()),
        torch.empty_like(logp),
        like(has_grad_ent),
        logp.new_empty((n,), dtype=torch.float64),
        like(a["return_per_token"]),
        like(a["return_weights"]),
    )


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])
    ctx.has_grad_entropy = output[2].numel() > 0  # (0,) when entropies do not enter the loss
    ctx.mark_non_differentiable(output[4], output[5])  # per_token, weights: diagnostics


def _backward(ctx, grad_loss, _g_grad, _g_grad_ent, _g_metrics, _g_per_token, _g_weights):
    refuse_double_backward("grpokit.torch.policy_loss")
    grad_logp, grad_ent = ctx.saved_tensors
    grads = dict.fromkeys(_OP_SIGNATURE.parameters)  # one per argument of the op: None but two
    if ctx.needs_input_grad[_ARG_INDEX["logp"]]:
        grads["logp"] = grad_logp * grad_loss.to(grad_logp.dtype)
    if ctx.needs_input_grad[_ARG_INDEX["entropies"]] and ctx.has_grad_entropy:
        grads["entropies"] = grad_ent * grad_loss.to(grad_ent.dtype)
    return tuple(grads.values())


_policy_loss_op.register_autograd(_backward, setup_context=_setup_context)


class PolicyLossOutput(NamedTuple):
    """``loss``: 0-d, differentiable with respect to ``logp`` (and ``entropies`` where they enter the
    loss); ``metrics``: {name: 0-d float64 tensor} (clip fractions, ratio statistics, KL, entropy; see
    docs/losses.md), detached; ``per_token`` (φ_{i,t}) and ``weights`` (ω_{i,t}) with
    ``return_per_token`` / ``return_weights``, else None: diagnostics, without gradient."""

    loss: torch.Tensor
    metrics: Dict[str, torch.Tensor]
    per_token: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None


def _spec_json(spec: Any, overrides: Dict[str, Any]) -> str:
    s = _presets.resolve(spec, overrides)
    return json.dumps(dataclasses.asdict(s), sort_keys=True)


@torch.compiler.assume_constant_result
def _prepare(
    spec: Any, overrides: Tuple[Tuple[str, Any], ...], has_ent: bool, has_smp: bool
) -> Tuple[str, Tuple[str, ...]]:
    # Spec resolution is plain Python over constants: torch.compile takes its result as a constant.
    sj = _spec_json(spec, dict(overrides))
    return sj, tuple(_metric_names(sj, has_ent, has_smp))


_LOSS_ARGUMENTS = _arguments.Arguments(_loss.policy_loss)


@_LOSS_ARGUMENTS
def policy_loss(
    logp: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    **kw: Any,
) -> PolicyLossOutput:
    """Differentiable GRPO-family loss: :func:`grpokit.policy_loss` as an autograd op.

    Same arguments, layouts, dtypes and options as :func:`grpokit.policy_loss` (torch tensors on one
    device, CPU or CUDA; read zero-copy through DLPack, also when they require grad), including
    ``selection`` (the ``verl.clip_cov`` / ``verl.kl_cov`` tokens). The forward runs the engine once,
    which also yields ∂loss/∂logp (and ∂loss/∂entropies); the backward multiplies them by the incoming
    gradient. ``old_logp=None`` is the on-policy shortcut (ratio 1). ``per_token`` and ``weights``
    (``return_per_token`` / ``return_weights``) are returned without gradient.

    Global counts: under gradient accumulation or data parallelism pass the counts of the whole
    optimizer step, ``**global_counts(...)`` (tokens, sequences, and ``dp_size``, which undoes DDP's
    gradient average); then the accumulated, averaged gradient equals the gradient of one call on
    the concatenated batch.

    Works under ``torch.compile`` (the op ``torch.ops.grpokit.policy_loss`` has a fake implementation).
    The spec and the options are constants of the compiled graph: an option whose value changes
    every step (``num_items_in_batch``) recompiles; keep the loss call outside the compiled region
    then, or pass counts that do not change.

    Example:
        >>> import torch, grpokit.torch as gkt
        >>> lp = torch.log(torch.full((2, 3), 0.5)).requires_grad_()
        >>> out = gkt.policy_loss(lp, lp.detach(), torch.tensor([1.0, -1.0]), spec="paper.dapo")
        >>> out.loss.backward()
        >>> lp.grad[0, 0].item()
        -0.1666666716337204
    """
    a, overrides = _LOSS_ARGUMENTS.split("policy_loss", kw)  # every argument of grpokit.policy_loss
    a.update(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    for name in _OP_TENSORS:
        if a[name] is not None and not isinstance(a[name], torch.Tensor):
            raise TypeError(f"grpokit.torch.policy_loss: {name} must be a torch tensor, got {type(a[name]).__name__}")
    has_ent, has_smp = a["entropies"] is not None, a["sampling_logp"] is not None
    sj, names = _prepare(a["spec"], tuple(sorted(overrides.items())), has_ent, has_smp)
    # an explicit stream object becomes its handle here (the op takes an int); None: the current stream
    stream = a["stream"] if a["stream"] is None else _arrays.resolve_stream(_arrays.placement_of(logp), a["stream"])
    per_token, weights = bool(a["return_per_token"]), bool(a["return_weights"])
    a.update(spec=sj, stream=stream, return_per_token=per_token, return_weights=weights)
    a.update(num_threads=int(a["num_threads"]), check_finite=bool(a["check_finite"]))
    loss, _, _, metrics, per_token_out, weights_out = torch.ops.grpokit.policy_loss(**a)
    return PolicyLossOutput(
        loss,
        {n: metrics[k].detach() for k, n in enumerate(names)},
        per_token_out if per_token else None,
        weights_out if weights else None,
    )


def policy_loss_from_rewards(
    logp: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    rewards: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    group_size: Optional[int] = None,
    group_ids: Optional[torch.Tensor] = None,
    estimator: str = "grpo",
    std: Optional[str] = None,
    spec: Any = "trl.grpo",
    **loss_options: Any,
) -> PolicyLossOutput:
    """Rewards → advantages (:func:`grpokit.advantages`) → :func:`policy_loss`, in one call.

    ``rewards`` (B,) (completions of a group adjacent, ``group_size`` each, or ``group_ids``);
    ``estimator`` and ``std`` go to :func:`grpokit.advantages`, everything else to :func:`policy_loss`.
    Under data parallelism each process must hold whole groups. The advantages carry no gradient.
    """
    adv = _advantages.advantages(rewards.detach(), group_size, group_ids=group_ids, estimator=estimator, std=std)
    return policy_loss(logp, old_logp, adv.to(logp.dtype), mask, spec=spec, **loss_options)


def global_counts(
    masks: Any,
    *,
    spec: Any = "trl.grpo",
    group: Any = None,
    all_reduce: Optional[bool] = None,
) -> Dict[str, float]:
    """The counts of a whole optimizer step, as ``policy_loss`` options.

    ``masks``: the (B, T) loss mask of every micro-batch this process accumulates into the step (one
    tensor or a list). With ``torch.distributed`` initialised (or ``all_reduce=True``) the counts are
    summed over the process ``group`` (one all-reduce) and ``dp_size`` is its size, so that DDP's
    gradient average (÷dp_size) is undone. Returns ``{"num_items_in_batch", "num_sequences",
    "dp_size"}``; ``num_sequences`` counts rows with at least one valid token where the spec's
    aggregation does (verl's ``seq-mean-*``), else every row.

    Example: ``gkt.policy_loss(lp, old, adv, mask, spec="paper.dapo", **gkt.global_counts([m1, m2]))``.
    """
    s = _presets.resolve(spec, {})
    ms = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    if not ms:
        raise ValueError("masks: expected at least one mask")
    tok = sum((m != 0).sum().double() for m in ms)
    seq = sum(
        ((m != 0).sum(-1) > 0).sum().double()
        if s.seq_count_nonempty
        else torch.tensor(float(m.shape[0]), dtype=torch.float64, device=m.device)
        for m in ms
    )
    dist = torch.distributed
    if all_reduce is None:
        all_reduce = dist.is_available() and dist.is_initialized()
    world = 1
    if all_reduce:
        counts = torch.stack([tok, seq]).to(ms[0].device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        tok, seq = counts[0], counts[1]
        world = dist.get_world_size(group)
    return {"num_items_in_batch": float(tok), "num_sequences": float(seq), "dp_size": float(world)}
