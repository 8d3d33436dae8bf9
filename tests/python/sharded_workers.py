"""Worker bodies for test_sharded_logprobs.py, run in gloo processes (torch.multiprocessing spawn).

Every rank builds the same full problem from a seed, computes the unsharded result with
grpokit.torch's own ops, takes its shard and checks the vocabulary-parallel functions against it.
A failing check raises in the worker; spawn re-raises it in the test.
"""

from __future__ import annotations

import functools
import os
import re

import torch
import torch.distributed as dist

import grpokit.torch as gkt

# float32: the shifted row has |z| ≈ 70, where an ulp is 8e-6 and the two sides round differently
# bfloat16: float32 math on both sides, but the gradient is rounded to bfloat16 (2^-8 relative)
TOL = {
    torch.float32: dict(rtol=1e-4, atol=3e-5),
    torch.float64: dict(rtol=1e-11, atol=1e-12),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-3),
}


def run(rank: int, world: int, port: int, cases: list) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for case in cases:  # one process group for all: spawning is the slow part
            CASES[case](rank, world)
    finally:
        dist.destroy_process_group()


def _shards(world: int, V: int):
    """Uneven (start, size) per rank, and not in rank order: rank r holds the shard world − 1 − r."""
    sizes = {2: [3, V - 3], 4: [1, 5, V - 8, 2]}[world]
    starts = [sum(sizes[:i]) for i in range(world)]
    return [(starts[i], sizes[i]) for i in reversed(range(world))]


def _ids_everywhere(g, shape, V, shards):
    """Token ids drawn from every shard (first ids: one per shard, incl. each shard's column 0)."""
    ids = torch.randint(0, V, shape, generator=g).reshape(-1)
    firsts = torch.tensor([s for s, _ in shards] + [s + n - 1 for s, n in shards])
    ids[: firsts.numel()] = firsts
    return ids.reshape(shape)


def _logits(g, shape, dtype):
    x = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    flat = x.view(-1, shape[-1])
    flat[1, 2] = float("-inf")  # a −inf logit (probability 0, gradient exactly 0)
    flat[2, 1] = flat[4, 3] = float("-inf")  # ... in a column 0 of a shard (the backward rewrites it)
    flat[3] += 1e4 if dtype == torch.float64 else 50  # far from 0 (float32 logp itself is ulp(1e4)-coarse there)
    return x.to(dtype)


def _upstream(g, shape, dtype):
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _close(got, want, dtype, what):
    torch.testing.assert_close(got, want, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def case_logits(rank: int, world: int) -> None:
    V = 13
    shards = _shards(world, V)
    start, size = shards[rank]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for shape in ((8, V), (2, 5, V)):
            g = torch.Generator().manual_seed(7)
            full = _logits(g, shape, dtype).requires_grad_()
            ids = _ids_everywhere(g, shape[:-1], V, shards)
            ga, gb = _upstream(g, shape[:-1], torch.float64 if dtype == torch.float64 else torch.float32)
            for grads in ((ga, gb), (ga, None), (None, gb)):
                want = gkt.token_logprobs(full, ids, temperature=0.7)
                (wg,) = torch.autograd.grad(_loss(want, grads), full)
                part = full.detach()[..., start : start + size].clone().requires_grad_()
                got = gkt.vocab_parallel_token_logprobs(part, ids, vocab_start=start, temperature=0.7)
                _close(got.logp, want.logp, dtype, "logp")
                _close(got.entropy, want.entropy, dtype, "entropy")
                (gg,) = torch.autograd.grad(_loss(got, grads), part)
                _close(gg, wg[..., start : start + size], dtype, f"grad logits {[x is not None for x in grads]}")
    assert got.sum_sq_probs is None
    # entropy=False: no entropy output, same logp; Σp² (forward only) as unsharded
    out = gkt.vocab_parallel_token_logprobs(
        part.detach(), ids, vocab_start=start, entropy=False, sum_sq_probs=True, temperature=0.7
    )
    assert out.entropy is None and torch.equal(out.logp, got.logp.detach()), "logp (entropy=False)"
    want = gkt.token_logprobs(full.detach(), ids, temperature=0.7, sum_sq_probs=True)
    _close(out.sum_sq_probs, want.sum_sq_probs, torch.float32, "sum_sq_probs")


def _loss(out, grads):
    ga, gb = grads
    loss = 0
    if ga is not None:
        loss = loss + (out.logp * ga).sum()
    if gb is not None:
        loss = loss + (out.entropy * gb).sum()
    return loss


def case_linear(rank: int, world: int) -> None:
    V, H = 13, 4
    shards = _shards(world, V)
    start, size = shards[rank]
    for dtype in (torch.float32, torch.float64):
        for lead in ((9,), (2, 5)):
            g = torch.Generator().manual_seed(11)
            hidden = torch.randn(*lead, H, generator=g, dtype=dtype).requires_grad_()
            weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
            ids = _ids_everywhere(g, lead, V, shards)
            grads = _upstream(g, lead, dtype)
            want = gkt.linear_token_logprobs(hidden, weight, ids, temperature=1.3)
            wh, ww = torch.autograd.grad(_loss(want, grads), (hidden, weight), retain_graph=True)
            h = hidden.detach().clone().requires_grad_()
            w = weight.detach()[start : start + size].clone().requires_grad_()
            got = gkt.vocab_parallel_linear_token_logprobs(h, w, ids, vocab_start=start, temperature=1.3, chunk_size=2)
            _close(got.logp, want.logp, dtype, "logp")
            _close(got.entropy, want.entropy, dtype, "entropy")
            gh, gw = torch.autograd.grad(_loss(got, grads), (h, w))
            _close(gh, wh, dtype, "grad hidden")
            _close(gw, ww[start : start + size], dtype, "grad weight")
            sq = gkt.vocab_parallel_linear_token_logprobs(
                h, w, ids, vocab_start=start, sum_sq_probs=True, temperature=1.3
            )
            want_sq = gkt.linear_token_logprobs(hidden, weight, ids, sum_sq_probs=True, temperature=1.3).sum_sq_probs
            _close(sq.sum_sq_probs, want_sq, dtype, "sum_sq_probs")
            # a frozen head: only grad hidden (still all-reduced), and logp-only upstream
            wf = w.detach()
            got = gkt.vocab_parallel_linear_token_logprobs(h, wf, ids, vocab_start=start, temperature=1.3)
            (gh,) = torch.autograd.grad((got.logp * grads[0]).sum(), h)
            (wh,) = torch.autograd.grad((want.logp * grads[0]).sum(), hidden)
            _close(gh, wh, dtype, "grad hidden (frozen head, logp only)")


def case_subgroups(rank: int, world: int) -> None:
    """Two tensor-parallel groups of 2 in a world of 4, each with its own data: nothing crosses groups."""
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]  # every rank creates every group
    group, start, size = groups[rank // 2], (0, 3)[rank % 2], (3, 4)[rank % 2]
    g = torch.Generator().manual_seed(100 + rank // 2)
    full = _logits(g, (6, 7), torch.float64).requires_grad_()
    hidden = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 7, (6,), generator=g)
    want = gkt.token_logprobs(full, ids)
    part = full.detach()[:, start : start + size].clone().requires_grad_()
    got = gkt.vocab_parallel_token_logprobs(part, ids, vocab_start=start, group=group)
    _close(got.logp, want.logp, torch.float64, "logp")
    (gg,) = torch.autograd.grad(got.entropy.sum(), part)
    _close(gg, torch.autograd.grad(want.entropy.sum(), full)[0][:, start : start + size], torch.float64, "grad")
    lin = gkt.vocab_parallel_linear_token_logprobs(
        hidden, weight[start : start + size], ids, vocab_start=start, group=group
    )
    (gh,) = torch.autograd.grad(lin.logp.sum(), hidden)
    (wh,) = torch.autograd.grad(gkt.linear_token_logprobs(hidden, weight, ids).logp.sum(), hidden)
    _close(gh, wh, torch.float64, "grad hidden (all-reduced within the group)")


def _raises(pattern: str, f) -> None:
    try:
        f()
    except ValueError as e:
        assert re.search(pattern, str(e)), str(e)
    else:
        raise AssertionError(f"no ValueError matching {pattern!r}")


def case_errors(rank: int, world: int) -> None:
    V = 13
    start, size = _shards(world, V)[rank]
    x = torch.randn(3, size)
    ids = torch.tensor([0, 5, 12])
    f = gkt.vocab_parallel_token_logprobs
    _raises(r"token_ids must lie in \[0, 13\).*got \[13, 13\]", lambda: f(x, ids.clone().fill_(13), vocab_start=start))
    _raises(
        r"token_ids must lie in \[0, 13\).*got \[-1, 12\]", lambda: f(x, torch.tensor([-1, 5, 12]), vocab_start=start)
    )
    # the rank holding [0, n) claims one column more: the shards overlap (every rank sees it and raises)
    wide = torch.randn(3, size + (start == 0))
    _raises(r"do not tile \[0, V\).*expected a shard starting at \d+, got", lambda: f(wide, ids, vocab_start=start))
    # a gap: rank 0 starts one id late
    _raises(r"do not tile \[0, V\).*expected a shard starting at", lambda: f(x, ids, vocab_start=start + (rank == 0)))
    _raises(r"vocab_start must be an int >= 0, got -1", lambda: f(x, ids, vocab_start=-1))
    # the engine refuses one rank's shard (a NaN): every rank raises instead of waiting for it
    bad = x.clone()
    bad[1, 0] = float("nan") if rank == 0 else 0.0
    _raises(r"on rank 0: .*row 1|another rank's engine call refused", lambda: f(bad, ids, vocab_start=start))


def case_megatron(rank: int, world: int) -> None:
    """Against Megatron-core's vocab_parallel_cross_entropy (even shards in rank order, its layout)."""
    import megatron.core.tensor_parallel.cross_entropy as ce

    # its tensor-parallel group is this test's world (parallel_state is not initialised on CPU)
    ce.get_tensor_model_parallel_group = lambda: dist.group.WORLD
    ce.get_tensor_model_parallel_rank = lambda: rank
    ce.get_tensor_model_parallel_world_size = lambda: world
    S, B, per = 5, 2, 3
    g = torch.Generator().manual_seed(5)
    full = 2 * torch.randn(S, B, per * world, generator=g)
    ids = torch.randint(0, per * world, (S, B), generator=g)
    upstream = torch.randn(S, B, generator=g)
    shard = full[..., rank * per : (rank + 1) * per]
    mine = shard.clone().requires_grad_()
    theirs = shard.clone().requires_grad_()
    got = gkt.vocab_parallel_token_logprobs(mine, ids, vocab_start=rank * per)
    loss = ce.vocab_parallel_cross_entropy(theirs.clone(), ids)  # it writes its input
    _close(got.logp, -loss, torch.float32, "logp vs Megatron's -loss")
    (gm,) = torch.autograd.grad((got.logp * upstream).sum(), mine)
    (gt,) = torch.autograd.grad((-loss * upstream).sum(), theirs)
    _close(gm, gt, torch.float32, "grad logits vs Megatron's")


def case_compile(rank: int, world: int) -> None:
    """Under torch.compile, the same values and gradients as eager: with the checks (host syncs:
    graph breaks) and, check=False, as one graph (fullgraph=True)."""
    V = 13
    start, size = _shards(world, V)[rank]
    g = torch.Generator().manual_seed(3)
    full = _logits(g, (6, V), torch.float32)
    ids = _ids_everywhere(g, (6,), V, _shards(world, V))
    ga, gb = _upstream(g, (6,), torch.float32)

    def f(x, check=True):
        out = gkt.vocab_parallel_token_logprobs(x, ids, vocab_start=start, temperature=0.7, check=check)
        return (out.logp * ga).sum() + (out.entropy * gb).sum()

    part = full[:, start : start + size].clone().requires_grad_()
    want, (wg,) = f(part), torch.autograd.grad(f(part), part)
    for fullgraph, check in ((False, True), (True, False)):
        got = torch.compile(functools.partial(f, check=check), backend="aot_eager", fullgraph=fullgraph)(part)
        (gg,) = torch.autograd.grad(got, part)
        _close(got, want, torch.float32, "compiled loss")
        _close(gg, wg, torch.float32, "compiled grad")
    # the hidden-states form as one graph too
    hidden = torch.randn(6, 4, generator=g, requires_grad=True)
    weight = torch.randn(V, 4, generator=g)[start : start + size].requires_grad_()

    def lin(h, w):
        out = gkt.vocab_parallel_linear_token_logprobs(h, w, ids, vocab_start=start, check=False)
        return (out.logp * ga).sum() + (out.entropy * gb).sum()

    want, wgrads = lin(hidden, weight), torch.autograd.grad(lin(hidden, weight), (hidden, weight))
    got = torch.compile(lin, backend="aot_eager", fullgraph=True)(hidden, weight)
    for a, b, what in zip(torch.autograd.grad(got, (hidden, weight)), wgrads, ("hidden", "weight")):
        _close(a, b, torch.float32, f"compiled linear grad {what}")
    _close(got, want, torch.float32, "compiled linear loss")


def _tie_rows(x: torch.Tensor, V: int) -> None:
    """Rows 0–2: a flat row; integers, so equal values on both sides of every shard border; the k = 3rd
    value (1) at columns 1, 2, 3, 6 and 11 (the borders of both worlds' shards) and nowhere else."""
    x[0] = 0.5
    x[1] = torch.arange(V, dtype=x.dtype).remainder(4)
    x[2] = 0.0
    x[2, [1, 2, 3, 6, 11]] = 1.0
    x[2, 0], x[2, 5] = 2.0, 3.0


def _masked_loss(out, grads):
    """Σ ga·logp + Σ gb·entropy over the tokens inside the kept set (logp = −inf elsewhere)."""
    ga, gb = grads
    logp = torch.where(torch.isneginf(out.logp), 0.0, out.logp)
    return (logp * ga).sum() + (out.entropy * gb).sum()


def _same_kept_result(got, want, dtype, what):
    assert torch.equal(torch.isneginf(got.logp), torch.isneginf(want.logp)), f"{what}: tokens outside differ"
    _close(got.logp, want.logp, dtype, f"{what}: logp")
    _close(got.entropy, want.entropy, dtype, f"{what}: entropy")


def case_sampler(rank: int, world: int) -> None:
    """top_k / top_p / min_p on the shards against the unsharded op: scalars and per-row values, off
    values (k = 0, k = V, k > V, p = 1), both conventions, both entropies, ties at the shard borders."""
    V, N = 13, 10
    shards = _shards(world, V)
    start, size = shards[rank]
    g = torch.Generator().manual_seed(21)
    k_rows = torch.tensor([3, 0, 3, 13, 1, 20, 5, 2, 7, 4])
    p_rows = torch.tensor([0.5, 1.0, 0.9, 0.3, 1.0, 0.75, 0.2, 0.95, 0.6, 0.85], dtype=torch.float64)
    settings = [
        dict(top_k=3),
        dict(top_k=13),
        dict(top_k=20),
        dict(top_k=0),
        dict(top_p=0.6),
        dict(top_p=1.0),
        dict(min_p=0.1),
        dict(top_k=5, top_p=0.8, min_p=0.05),
        dict(top_k=5, top_p=0.8, min_p=0.05, sampler="sglang"),
        dict(top_p=0.7, sampler="sglang"),
        dict(top_k=k_rows, top_p=p_rows, min_p=torch.linspace(0, 0.3, N)),
        dict(top_k=k_rows.tolist()),
    ]
    for dtype, some in ((torch.float32, settings), (torch.float64, settings), (torch.bfloat16, settings[7:9])):
        x = _logits(g, (N, V), dtype)
        _tie_rows(x, V)
        x[5:8] = torch.randint(-3, 4, (3, V), generator=g).to(dtype)  # more ties
        full = x.requires_grad_()
        ids = _ids_everywhere(g, (N,), V, shards)
        grads = _upstream(g, (N,), torch.float64 if dtype == torch.float64 else torch.float32)
        part = full.detach()[:, start : start + size].clone().requires_grad_()
        for kw in some:
            for entropy in ("full", "sampler"):
                what = f"{dtype} {entropy} {kw}"
                want = gkt.token_logprobs(full, ids, temperature=0.7, entropy=entropy, **kw)
                got = gkt.vocab_parallel_token_logprobs(
                    part, ids, vocab_start=start, temperature=0.7, entropy=entropy, **kw
                )
                _same_kept_result(got, want, dtype, what)
                (wg,) = torch.autograd.grad(_masked_loss(want, grads), full)
                (gg,) = torch.autograd.grad(_masked_loss(got, grads), part)
                _close(gg, wg[:, start : start + size], dtype, f"{what}: grad logits")
    # (B, T, V) logits and a logp-only upstream gradient
    full3 = full.detach()[:8].double().reshape(2, 4, V).requires_grad_()
    part3 = full3.detach()[..., start : start + size].clone().requires_grad_()
    want = gkt.token_logprobs(full3, ids[:8].reshape(2, 4), top_k=4, top_p=0.9, temperature=1.3)
    got = gkt.vocab_parallel_token_logprobs(
        part3, ids[:8].reshape(2, 4), vocab_start=start, top_k=4, top_p=0.9, temperature=1.3
    )
    _same_kept_result(got, want, torch.float64, "(B, T, V)")
    up = torch.where(torch.isneginf(want.logp), 0.0, want.logp)
    (wg,) = torch.autograd.grad(up.sum(), full3)
    (gg,) = torch.autograd.grad(torch.where(torch.isneginf(got.logp), 0.0, got.logp).sum(), part3)
    _close(gg, wg[..., start : start + size], torch.float64, "(B, T, V): grad logits")


def _random_sets(g, N: int, V: int, shards):
    """CSR kept sets in global ids: random subsets, an empty row (no replay), sets inside one shard."""
    rows = []
    for r in range(N):
        if r == 0:
            rows.append(torch.zeros(0, dtype=torch.int64))
        elif r <= len(shards):
            s, n = shards[r - 1]
            rows.append(torch.arange(s, s + n))  # all of one shard: nothing kept on the others
        else:
            rows.append(torch.nonzero(torch.rand(V, generator=g) < 0.4).reshape(-1))
    offsets = torch.tensor([0] + [len(x) for x in rows]).cumsum(0)
    return torch.cat(rows), offsets


def case_keep(rank: int, world: int) -> None:
    """keep= (global ids, CSR pair or a SamplingMask-like object) against the unsharded replay."""
    import types

    V, N = 13, 9
    shards = _shards(world, V)
    start, size = shards[rank]
    g = torch.Generator().manual_seed(33)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        full = (3 * torch.randn(N, V, generator=g, dtype=torch.float64)).to(dtype)
        full[6, 4] = float("-inf")
        full.requires_grad_()
        ids = _ids_everywhere(g, (N,), V, shards)
        keep = _random_sets(g, N, V, shards)
        grads = _upstream(g, (N,), torch.float64 if dtype == torch.float64 else torch.float32)
        part = full.detach()[:, start : start + size].clone().requires_grad_()
        for entropy in ("full", "sampler"):
            for form in (keep, types.SimpleNamespace(token_ids=keep[0], offsets=keep[1].int())):
                what = f"keep {dtype} {entropy}"
                want = gkt.token_logprobs(full, ids, temperature=0.8, keep=keep, entropy=entropy)
                got = gkt.vocab_parallel_token_logprobs(
                    part, ids, vocab_start=start, temperature=0.8, keep=form, entropy=entropy
                )
                _same_kept_result(got, want, dtype, what)
                (wg,) = torch.autograd.grad(_masked_loss(want, grads), full)
                (gg,) = torch.autograd.grad(_masked_loss(got, grads), part)
                _close(gg, wg[:, start : start + size], dtype, f"{what}: grad logits")


def case_linear_sampler(rank: int, world: int) -> None:
    """The hidden-states form under truncation and keep= against the unsharded ops (grad hidden and
    grad weight), with and without the checks (without: V from an all-reduce)."""
    V, H, N = 13, 4, 9
    shards = _shards(world, V)
    start, size = shards[rank]
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(41)
        hidden = (2 * torch.randn(N, H, generator=g, dtype=dtype)).requires_grad_()
        weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
        ids = _ids_everywhere(g, (N,), V, shards)
        grads = _upstream(g, (N,), dtype)
        keep = _random_sets(g, N, V, shards)
        settings = (dict(top_k=4, top_p=0.8), dict(min_p=0.2, entropy="sampler"), dict(keep=keep))
        for i, kw in enumerate(settings):
            what = f"linear {dtype} {kw}"
            if "keep" in kw:
                want = gkt.token_logprobs(hidden @ weight.T, ids, temperature=0.9, **kw)
            else:
                want = gkt.linear_token_logprobs(hidden, weight, ids, temperature=0.9, **kw)
            wh, ww = torch.autograd.grad(_masked_loss(want, grads), (hidden, weight))
            h = hidden.detach().clone().requires_grad_()
            w = weight.detach()[start : start + size].clone().requires_grad_()
            got = gkt.vocab_parallel_linear_token_logprobs(
                h, w, ids, vocab_start=start, temperature=0.9, check=i % 2 == 0, **kw
            )
            _same_kept_result(got, want, dtype, what)
            gh, gw = torch.autograd.grad(_masked_loss(got, grads), (h, w))
            _close(gh, wh, dtype, f"{what}: grad hidden")
            _close(gw, ww[start : start + size], dtype, f"{what}: grad weight")


def case_sampler_errors(rank: int, world: int) -> None:
    V = 13
    start, size = _shards(world, V)[rank]
    x = torch.randn(3, size)
    ids = torch.tensor([0, 5, 12])
    f = functools.partial(gkt.vocab_parallel_token_logprobs, x, ids, vocab_start=start)
    _raises(r"top_p: row 0 holds 0; expected a value in \(0, 1\]", lambda: f(top_p=0.0))
    _raises(r"top_p: row 2 holds 1.5", lambda: f(top_p=torch.tensor([0.5, 1.0, 1.5])))
    _raises(r"min_p: row 0 holds -0.1; expected a value in \[0, 1\]", lambda: f(min_p=-0.1))
    _raises(r"top_k: expected integers", lambda: f(top_k=2.5))
    _raises(r"top_k: expected a scalar or shape \(3,\)", lambda: f(top_k=[1, 2]))
    _raises(r"keep: .*not both", lambda: f(top_k=2, keep=(ids, torch.tensor([0, 1, 2, 3]))))
    _raises(r"sum_sq_probs: not available", lambda: f(top_p=0.5, sum_sq_probs=True))
    _raises(r"keep_offsets: expected 4 offsets", lambda: f(keep=(ids, torch.tensor([0, 3]))))
    _raises(
        r"keep_offsets: the last offset is 2; expected len\(keep_ids\) = 3",
        lambda: f(keep=(ids, torch.tensor([0, 1, 2, 2]))),
    )
    _raises(
        r"keep_ids: row 2 holds 13, outside the vocabulary \[0, 13\)",
        lambda: f(keep=(torch.tensor([0, 5, 13]), torch.tensor([0, 1, 2, 3]))),
    )
    _raises(r"keep_ids: row 0 holds 1 after 4", lambda: f(keep=(torch.tensor([4, 1, 2]), torch.tensor([0, 2, 2, 3]))))
    bad = torch.zeros(3, 13)
    bad[1, 7] = float("-inf")
    part = bad[:, start : start + size]
    _raises(
        r"kept set of row 1 holds no finite logit",
        lambda: gkt.vocab_parallel_token_logprobs(
            part, ids, vocab_start=start, keep=(torch.tensor([7]), torch.tensor([0, 0, 1, 1]))
        ),
    )
    try:
        f(keep=torch.ones(3, size, dtype=torch.bool))
    except TypeError as e:
        assert "keep: expected (keep_ids, keep_offsets) in global vocabulary ids" in str(e), str(e)
    else:
        raise AssertionError("a boolean keep mask was accepted on a shard")


CASES = {
    "logits": case_logits,
    "linear": case_linear,
    "errors": case_errors,
    "megatron": case_megatron,
    "compile": case_compile,
    "subgroups": case_subgroups,
    "sampler": case_sampler,
    "keep": case_keep,
    "linear_sampler": case_linear_sampler,
    "sampler_errors": case_sampler_errors,
}
