"""grpokit.torch.token_logprobs under the sampler's truncation: autograd against the NumPy-level
functions and the float64 reference, the custom ops (opcheck), and torch.compile without graph
breaks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import grpokit  # noqa: E402
import grpokit.torch as gkt  # noqa: E402
from logprobs_reference import ref_sampler_backward, ref_sampler_forward, ref_sampler_keep  # noqa: E402

KW = {"top_k": 12, "top_p": 0.85, "min_p": 0.01}


@pytest.mark.parametrize("entropy", ["full", "sampler"])
def test_autograd_matches_reference(entropy):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 60, generator=gen, dtype=torch.float64) * 2
    ids = torch.randint(0, 60, (2, 5), generator=gen)
    ids[0] = x[0].argmax(-1)
    xr = x.clone().requires_grad_()
    out = gkt.token_logprobs(xr, ids, temperature=0.8, entropy=entropy, **KW)
    a, b = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.randn(2, 5, generator=gen, dtype=torch.float64)
    kept = torch.isfinite(out.logp)
    (torch.where(kept, out.logp, 0.0) * a + out.entropy * b).sum().backward()
    keep, _ = ref_sampler_keep(x.numpy(), 0.8, **KW)
    logp, h_kept, h_full, _ = ref_sampler_forward(x.numpy(), ids.numpy(), keep, 0.8)
    np.testing.assert_array_equal(kept.numpy(), np.isfinite(logp))
    np.testing.assert_allclose(out.logp.detach().numpy()[kept], logp[kept.numpy()], atol=1e-12)
    np.testing.assert_allclose(out.entropy.detach().numpy(), h_kept if entropy == "sampler" else h_full, atol=1e-12)
    want = ref_sampler_backward(x.numpy(), ids.numpy(), keep, a.numpy(), b.numpy(), 0.8, entropy)
    np.testing.assert_allclose(xr.grad.numpy(), want, atol=1e-12)


def test_per_row_tensor_parameters_and_scalars_agree():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 30, generator=gen)
    ids = torch.randint(0, 30, (4,), generator=gen)
    rows = gkt.token_logprobs(
        x, ids, top_k=torch.tensor([3, 3, 3, 3]), top_p=torch.full((4,), 0.9, dtype=torch.float64)
    )
    one = gkt.token_logprobs(x, ids, top_k=3, top_p=0.9)
    torch.testing.assert_close(rows.logp, one.logp, rtol=0, atol=0)
    np_r = grpokit.token_logprobs(x.numpy(), ids.numpy(), top_k=3, top_p=0.9)
    np.testing.assert_array_equal(one.logp.numpy(), np_r.logp)


def test_refusals():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="inplace_grad: not available"):
        gkt.token_logprobs(x, torch.tensor([0, 1]), top_k=2, inplace_grad=True)
    with pytest.raises(ValueError, match="sum_sq_probs: not available"):
        gkt.token_logprobs(x, torch.tensor([0, 1]), top_p=0.5, sum_sq_probs=True)


def test_opcheck_sampler_ops():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 19, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 19, (2, 3), generator=gen)
    k, p = torch.tensor(5), torch.tensor(0.9, dtype=torch.float64)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for over in (False, True):
        torch.library.opcheck(
            torch.ops.grpokit.token_logprobs_sampler.default,
            (x.clone().requires_grad_(), ids, 0.7, k, p, None, "vllm", over),
            test_utils=utils,
        )
    r = grpokit.token_logprobs(x, ids, temperature=0.7, top_k=5, top_p=0.9)
    a = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.grpokit.token_logprobs_sampler_backward.default,
        (x, ids, r.lse, r.kept_logmass, r.keep_min, r.entropy, a, a, 0.7, False),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def _step(x, ids, mask):
    out = gkt.token_logprobs(x * 1.5, ids, temperature=0.9, top_k=10, top_p=0.9, entropy="sampler")
    lp = torch.where(mask & torch.isfinite(out.logp), out.logp, 0.0)
    return -(lp.sum() + 0.1 * out.entropy.sum())


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_matches_eager(backend):
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(3, 6, 40, generator=gen)
    ids = torch.randint(0, 40, (3, 6), generator=gen)
    mask = torch.rand(3, 6, generator=gen) > 0.2
    x_e = base.clone().requires_grad_()
    loss_e = _step(x_e, ids, mask)
    loss_e.backward()
    x_c = base.clone().requires_grad_()
    loss_c = torch.compile(_step, backend=backend, fullgraph=True)(x_c, ids, mask)
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=0)
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-6, atol=1e-9)


def test_linear_autograd_and_opcheck():
    gen = torch.Generator().manual_seed(13)
    h = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 30, (2, 4), generator=gen)
    hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
    out = gkt.linear_token_logprobs(hr, wr, ids, temperature=0.8, entropy="sampler", **KW)
    loss = torch.where(torch.isfinite(out.logp), out.logp, 0.0).sum() + out.entropy.sum()
    loss.backward()
    x = (h @ w.T).requires_grad_()
    ref = gkt.token_logprobs(x, ids, temperature=0.8, entropy="sampler", **KW)
    torch.testing.assert_close(out.logp, ref.logp)
    (torch.where(torch.isfinite(ref.logp), ref.logp, 0.0).sum() + ref.entropy.sum()).backward()
    torch.testing.assert_close(hr.grad, x.grad @ w)
    torch.testing.assert_close(wr.grad, torch.einsum("btv,bth->vh", x.grad, h))
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(
        torch.ops.grpokit.linear_token_logprobs_sampler.default,
        (h.clone().requires_grad_(), w, ids, 0.8, torch.tensor(5), None, None, "sglang", False),
        test_utils=utils,
    )


def test_trl_head_passes_the_sampler_settings():
    pytest.importorskip("trl")
    gtrl = pytest.importorskip("grpokit.integrations.trl")
    from trl.trainer.utils import add_fused_lm_head

    import trl_tiny as tt

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, len(tt.WORDS) + 2, (2, 8), generator=g)
    attn = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :3] = -100
    m = tt.model(seed=3)
    add_fused_lm_head(m, temperature=0.7, outputs=("log_probs", "entropy"))
    assert gtrl.add_grpokit_lm_head(m, 0.7, top_k=5, top_p=0.9, min_p=None)
    o = m(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    logits = m(input_ids=ids, attention_mask=attn).logits[:, :-1].detach()
    mask = labels[:, 1:] != -100
    want = gkt.token_logprobs(logits[mask].contiguous(), labels[:, 1:][mask], temperature=0.7, top_k=5, top_p=0.9)
    got = o.log_probs[mask]
    torch.testing.assert_close(torch.isinf(got), torch.isinf(want.logp))
    fin = torch.isfinite(want.logp)
    torch.testing.assert_close(got[fin], want.logp[fin], rtol=1e-5, atol=1e-5)
