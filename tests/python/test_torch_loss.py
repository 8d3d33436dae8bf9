"""grpokit.torch.policy_loss: the autograd op against the engine's NumPy path and finite differences,
torch.compile, the rewards form, and gradient accumulation / data parallelism (gloo, two processes)."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gkt = pytest.importorskip("grpokit.torch")

import grpokit  # noqa: E402
from grpokit._presets import resolve  # noqa: E402
from loss_reference import reference_loss  # noqa: E402
from torch_batches import numpy_policy_loss  # noqa: E402

AGGREGATIONS = ["token_mean", "token_sum", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]


def batch(seed, B=6, T=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    lp = torch.log(torch.rand(B, T, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    old = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    H = torch.rand(B, T, generator=g, dtype=torch.float64) + 0.1
    A = torch.randn(B, generator=g, dtype=torch.float64)
    return {
        k: (v.to(dtype) if v.is_floating_point() else v)
        for k, v in dict(lp=lp, old=old, ref=ref, H=H, A=A, mask=mask).items()
    }


@pytest.mark.parametrize("preset", ["trl.grpo", "trl.dapo", "paper.dr_grpo", "paper.cispo", "trl.sapo"])
def test_matches_engine_and_reference(preset):
    b = batch(1)
    opts = dict(beta=0.05, entropy_coef=0.01)
    lp = b["lp"].clone().requires_grad_()
    H = b["H"].clone().requires_grad_()
    out = gkt.policy_loss(lp, b["old"], b["A"], b["mask"], spec=preset, ref_logp=b["ref"], entropies=H, **opts)
    out.loss.backward()
    want = numpy_policy_loss(b, preset, ref_logp=b["ref"], entropies=b["H"], **opts)
    assert out.loss.item() == float(want.loss)
    np.testing.assert_array_equal(lp.grad.numpy(), want.grad_logp)
    np.testing.assert_array_equal(H.grad.numpy(), want.grad_entropy)
    assert set(out.metrics) == set(want.metrics)
    # and the independent NumPy reference
    spec = resolve(preset, opts)
    ref_loss = reference_loss(
        spec,
        b["lp"].numpy(),
        b["old"].numpy(),
        b["A"].numpy(),
        b["mask"].numpy(),
        ref=b["ref"].numpy(),
        H=b["H"].numpy(),
    )[0]
    np.testing.assert_allclose(out.loss.item(), ref_loss, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_upstream_scale():
    b = batch(2)
    lp = b["lp"].clone().requires_grad_()

    def f(x):
        return gkt.policy_loss(x, b["old"], b["A"], b["mask"], spec="paper.grpo_r1", ref_logp=b["ref"]).loss * 3.0

    assert torch.autograd.gradcheck(f, (lp,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_requires_grad_inputs_are_read_in_place_and_not_modified():
    b = batch(3, dtype=torch.float32)
    lp = b["lp"].clone().requires_grad_()
    old = b["old"].clone().requires_grad_()  # a caller that forgot to detach: read, never differentiated
    before = lp.detach().clone()
    out = gkt.policy_loss(lp, old, b["A"], b["mask"], spec="trl.dapo")
    assert out.loss.requires_grad and out.loss.dtype == torch.float32
    out.loss.backward()
    assert old.grad is None and lp.grad is not None
    assert torch.equal(lp.detach(), before)


def test_no_grad_needed():
    b = batch(4)
    with torch.no_grad():
        out = gkt.policy_loss(b["lp"], None, b["A"], b["mask"], spec="trl.grpo")
    assert not out.loss.requires_grad and torch.isfinite(out.loss)


def test_errors_name_the_argument():
    b = batch(5)
    with pytest.raises(TypeError, match="mask must be a torch tensor"):
        gkt.policy_loss(b["lp"], b["old"], b["A"], b["mask"].numpy())
    with pytest.raises(ValueError, match="unknown loss preset"):
        gkt.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="nope")
    bad = b["lp"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logp"):
        gkt.policy_loss(bad, b["old"], b["A"], b["mask"])


def test_torch_compile_aot_eager():
    b = batch(6)

    def step(lp):
        out = gkt.policy_loss(lp, b["old"], b["A"], b["mask"], spec="trl.dapo", ref_logp=b["ref"], beta=0.1)
        return out.loss * 2.0, out.metrics["clip_ratio/region_mean"]

    lp_e = b["lp"].clone().requires_grad_()
    loss_e, clip_e = step(lp_e)
    loss_e.backward()
    lp_c = b["lp"].clone().requires_grad_()
    loss_c, clip_c = torch.compile(step, backend="aot_eager", fullgraph=True)(lp_c)
    loss_c.backward()
    assert torch.equal(loss_c, loss_e) and torch.equal(clip_c, clip_e)
    assert torch.equal(lp_c.grad, lp_e.grad)


def test_opcheck():
    b = batch(7)
    sj = gkt._spec_json("trl.grpo", {"beta": 0.05})
    args = (b["lp"].clone().requires_grad_(), b["old"], b["A"], b["mask"], b["ref"], None, None, None, None, None, sj)
    torch.library.opcheck(
        torch.ops.grpokit.policy_loss.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def test_rewards_form():
    b = batch(8)
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0], dtype=torch.float64)
    lp = b["lp"].clone().requires_grad_()
    out = gkt.policy_loss_from_rewards(lp, b["old"], rewards, b["mask"], group_size=3, spec="paper.dapo")
    out.loss.backward()
    adv = grpokit.advantages(rewards.numpy(), 3)
    want = grpokit.policy_loss(b["lp"].numpy(), b["old"].numpy(), adv, b["mask"].numpy(), spec="paper.dapo")
    np.testing.assert_allclose(out.loss.item(), float(want.loss), rtol=1e-14)
    np.testing.assert_allclose(lp.grad.numpy(), want.grad_logp, rtol=1e-14)


# ---- gradient accumulation and data parallelism -------------------------------------------------


def _model_batch(seed, B=8, T=5, V=11, D=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[5] = T, 0  # an empty row, for verl's non-empty sequence counts
    mask = torch.arange(T)[None, :] < lengths[:, None]
    old_logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    old = torch.log_softmax(old_logits, -1).gather(-1, ids[..., None])[..., 0]
    A = torch.randn(B, generator=g, dtype=torch.float64)
    W = torch.randn(D, V, generator=g, dtype=torch.float64)
    return x, ids, mask, old, A, W


def _grad(W0, parts, spec, counts):
    """Σ over micro-batches of ∂loss/∂W, each micro-batch normalised by the step's global counts."""
    W = W0.clone().requires_grad_()
    for x, ids, mask, old, A in parts:
        lp = torch.log_softmax(x @ W, -1).gather(-1, ids[..., None])[..., 0]
        gkt.policy_loss(lp, old, A, mask, spec=spec, **counts).loss.backward()
    return W.grad


def _specs():
    out = [grpokit.LossSpec(aggregation=a, max_completion_length=5.0) for a in AGGREGATIONS]
    return out + [grpokit.LossSpec().replace(loss_agg_mode="seq-mean-token-sum"), "paper.gspo"]


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: s if isinstance(s, str) else s.aggregation)
def test_gradient_accumulation_equals_full_batch(spec):
    x, ids, mask, old, A, W = _model_batch(11)
    full = _grad(W, [(x, ids, mask, old, A)], spec, {})
    chunks = [(x[i : i + 3], ids[i : i + 3], mask[i : i + 3], old[i : i + 3], A[i : i + 3]) for i in (0, 3, 6)]
    counts = gkt.global_counts([c[2] for c in chunks], spec=spec)
    assert counts["dp_size"] == 1.0
    np.testing.assert_allclose(_grad(W, chunks, spec, counts).numpy(), full.numpy(), rtol=1e-12, atol=1e-15)


def _dp_worker(rank, world, port, result_path):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, ids, mask, old, A, W = _model_batch(11)
        rows = slice(rank * 4, rank * 4 + 4)  # rank r holds rows 4r..4r+3, as two micro-batches of 2
        mine = [tuple(t[rows][j : j + 2] for t in (x, ids, mask, old, A)) for j in (0, 2)]
        grads = []
        for spec in _specs():
            counts = gkt.global_counts([m[2] for m in mine], spec=spec)  # all-reduced over the group
            g = _grad(W, mine, spec, counts)
            dist.all_reduce(g)  # DDP's average: sum, then ÷ world
            grads.append(g / world)
        if rank == 0:
            torch.save(grads, result_path)
    finally:
        dist.destroy_process_group()


def test_data_parallel_gloo_equals_full_batch(tmp_path):
    import socket

    mp = pytest.importorskip("torch.multiprocessing")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "grads.pt")
    mp.spawn(_dp_worker, args=(2, port, path), nprocs=2, join=True)
    got = torch.load(path)
    x, ids, mask, old, A, W = _model_batch(11)
    for spec, g in zip(_specs(), got):
        full = _grad(W, [(x, ids, mask, old, A)], spec, {})
        np.testing.assert_allclose(g.numpy(), full.numpy(), rtol=1e-12, atol=1e-15, err_msg=str(spec))


@pytest.mark.gpu
def test_cuda_tensors_match_cpu():
    b = batch(9, dtype=torch.float32)
    lp = b["lp"].clone().requires_grad_()
    out = gkt.policy_loss(lp, b["old"], b["A"], b["mask"], spec="trl.grpo", ref_logp=b["ref"], beta=0.05)
    out.loss.backward()
    lpc = b["lp"].cuda().requires_grad_()
    outc = gkt.policy_loss(
        lpc, b["old"].cuda(), b["A"].cuda(), b["mask"].cuda(), spec="trl.grpo", ref_logp=b["ref"].cuda(), beta=0.05
    )
    outc.loss.backward()
    assert outc.loss.device.type == "cuda" and lpc.grad.device.type == "cuda"
    torch.testing.assert_close(outc.loss.cpu(), out.loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lpc.grad.cpu(), lp.grad, rtol=1e-5, atol=1e-6)
    compiled = torch.compile(
        lambda x: gkt.policy_loss(x, b["old"].cuda(), b["A"].cuda(), b["mask"].cuda()).loss, backend="aot_eager"
    )
    torch.testing.assert_close(
        compiled(lpc).detach().cpu(),
        gkt.policy_loss(lp, b["old"], b["A"], b["mask"]).loss.detach(),
        rtol=1e-5,
        atol=1e-6,
    )


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**16),
    B=st.integers(1, 5),
    T=st.integers(1, 6),
    preset=st.sampled_from(["trl.grpo", "trl.dapo", "trl.cispo", "trl.luspo", "paper.gspo", "paper.gpg"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    on_policy=st.booleans(),
)
def test_property_op_equals_engine(seed, B, T, preset, dtype, on_policy):
    """Any batch: the autograd op's loss and gradient are the engine's, bit for bit, in the input dtype."""
    b = batch(seed, B=B, T=T, dtype=dtype)
    lp = b["lp"].clone().requires_grad_()
    old = None if on_policy else b["old"]
    out = gkt.policy_loss(lp, old, b["A"], b["mask"], spec=preset)
    out.loss.backward()
    want = grpokit.policy_loss(
        b["lp"].numpy(), None if on_policy else b["old"].numpy(), b["A"].numpy(), b["mask"].numpy(), spec=preset
    )
    assert out.loss.dtype == dtype and lp.grad.dtype == dtype
    assert out.loss.item() == float(want.loss)
    np.testing.assert_array_equal(lp.grad.numpy(), want.grad_logp)
