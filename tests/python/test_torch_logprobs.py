"""grpokit.torch.token_logprobs / linear_token_logprobs: autograd against torch's own
log_softmax/entropy, gradcheck, the Σπ² side output, the custom ops (opcheck) and torch.compile
(aot_eager and inductor, fullgraph) end to end with the policy loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
gkt = pytest.importorskip("grpokit.torch")

import grpokit  # noqa: E402


def eager(logits, ids, temperature):
    logps = torch.log_softmax(logits / temperature, -1)
    return logps.gather(-1, ids[..., None])[..., 0], -(logps.exp() * logps).sum(-1)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 9, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    ids = torch.randint(0, 9, (2, 3), generator=gen)

    def f(xx):
        out = gkt.token_logprobs(xx, ids, temperature=0.7)
        return out.logp, out.entropy

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("inplace_grad", [False, True])
def test_matches_eager_autograd_float32(inplace_grad):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(3, 8, 301, generator=gen) * 3
    ids = torch.randint(0, 301, (3, 7), generator=gen)
    wa, wb = torch.randn(3, 7, generator=gen), torch.randn(3, 7, generator=gen)

    x_ref = base.double().requires_grad_()
    lp, h = eager(x_ref[:, :-1], ids, 1.4)
    ((lp * wa).sum() + (h * wb).sum()).backward()

    x = base.clone().requires_grad_()
    # A non-leaf, row-strided view, as a model's logits[:, :-1]; in place writes into its buffer.
    logits = (x * 1.0)[:, :-1]
    out = gkt.token_logprobs(logits, ids, temperature=1.4, inplace_grad=inplace_grad)
    ((out.logp * wa).sum() + (out.entropy * wb).sum()).backward()
    torch.testing.assert_close(out.logp.double(), lp.detach(), rtol=0, atol=2e-5)
    torch.testing.assert_close(out.entropy.double(), h.detach(), rtol=0, atol=2e-5)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=0, atol=2e-6)


def test_entropy_false_and_only_logp_used():
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 50, generator=gen)).requires_grad_()
    ids = torch.randint(0, 50, (5,), generator=gen)
    out = gkt.token_logprobs(x, ids, entropy=False)
    assert out.entropy is None
    out.logp.mean().backward()
    x2 = x.detach().double().requires_grad_()
    eager(x2, ids, 1.0)[0].mean().backward()
    torch.testing.assert_close(x.grad.double(), x2.grad, rtol=0, atol=1e-7)


def test_bfloat16_logits_get_bfloat16_grad():
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 100, generator=gen) * 2).bfloat16().requires_grad_()
    ids = torch.randint(0, 100, (4,), generator=gen)
    out = gkt.token_logprobs(x, ids)
    assert out.logp.dtype == torch.float32
    (out.logp.sum() + out.entropy.sum()).backward()
    assert x.grad.dtype == torch.bfloat16
    x2 = x.detach().double().requires_grad_()
    lp, h = eager(x2, ids, 1.0)
    (lp.sum() + h.sum()).backward()
    torch.testing.assert_close(x.grad.double(), x2.grad, rtol=2.0**-8, atol=1e-6)


def test_inplace_grad_refuses_a_leaf():
    x = torch.zeros(2, 5, requires_grad=True)
    with pytest.raises(ValueError, match="leaf tensor that requires grad"):
        gkt.token_logprobs(x, torch.tensor([0, 1]), inplace_grad=True)


def test_rejects_non_tensors():
    with pytest.raises(TypeError, match="must be torch tensors"):
        gkt.token_logprobs([[0.0, 1.0]], torch.tensor([0]))


# ---- Σπ² ------------------------------------------------------------------------------------------


def test_sum_sq_probs_is_a_detached_side_output():
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 4, 77, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    ids = torch.randint(0, 77, (3, 4), generator=gen)
    out = gkt.token_logprobs(x, ids, temperature=0.8, sum_sq_probs=True)
    p = torch.softmax(x.detach() / 0.8, -1)
    torch.testing.assert_close(out.sum_sq_probs, (p * p).sum(-1), rtol=1e-12, atol=0)
    assert not out.sum_sq_probs.requires_grad
    assert gkt.token_logprobs(x, ids).sum_sq_probs is None
    # The gradient of logp + entropy is the same with and without the side output.
    (out.logp.sum() + out.entropy.sum()).backward()
    g1, x.grad = x.grad.clone(), None
    plain = gkt.token_logprobs(x, ids, temperature=0.8)
    (plain.logp.sum() + plain.entropy.sum()).backward()
    torch.testing.assert_close(x.grad, g1, rtol=0, atol=0)


def test_linear_sum_sq_probs():
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(97, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 97, (2, 5), generator=gen)
    out = gkt.linear_token_logprobs(hidden, weight, ids, temperature=1.2, chunk_size=32, sum_sq_probs=True)
    p = torch.softmax((hidden @ weight.T).detach() / 1.2, -1)
    torch.testing.assert_close(out.sum_sq_probs, (p * p).sum(-1), rtol=1e-12, atol=0)
    assert not out.sum_sq_probs.requires_grad
    out.logp.sum().backward()
    assert hidden.grad is not None and weight.grad is not None


# ---- custom ops and torch.compile ----------------------------------------------------------------


def test_opcheck_token_logprobs():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 19, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 19, (2, 3), generator=gen)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for sq in (False, True):
        torch.library.opcheck(
            torch.ops.grpokit.token_logprobs.default,
            (x.clone().requires_grad_(), ids, 0.7, sq, False),
            test_utils=utils,
        )
    r = grpokit.token_logprobs(x, ids, temperature=0.7)
    a = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    bw = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(
        torch.ops.grpokit.token_logprobs_backward.default, (x, ids, r.lse, r.entropy, a, None, 0.7), test_utils=bw
    )
    torch.library.opcheck(
        torch.ops.grpokit.token_logprobs_backward_.default, (x.clone(), ids, r.lse, r.entropy, a, a, 0.7), test_utils=bw
    )


def test_opcheck_linear_token_logprobs():
    gen = torch.Generator().manual_seed(8)
    h = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 11, (5,), generator=gen)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for sq in (False, True):
        torch.library.opcheck(
            torch.ops.grpokit.linear_token_logprobs.default,
            (h.clone().requires_grad_(), w.clone().requires_grad_(), ids, 1.1, 3, sq),
            test_utils=utils,
        )
    r = grpokit.linear_token_logprobs(h, w, ids, temperature=1.1, chunk_size=3)
    a = torch.randn(5, generator=gen, dtype=torch.float64)
    for want in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(
            torch.ops.grpokit.linear_token_logprobs_backward.default,
            (h, w, ids, r.lse, r.entropy, a, a, 1.1, 3, *want),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


def _logits_step(x, ids, old, adv, mask, inplace_grad=False):
    # A model's output logits (a non-leaf, row-strided view) → log-probs → the policy loss.
    out = gkt.token_logprobs((x * 1.5)[:, :-1], ids, temperature=0.9, sum_sq_probs=True, inplace_grad=inplace_grad)
    loss = gkt.policy_loss(out.logp, old, adv, mask, spec="trl.dapo", entropies=out.entropy, entropy_coef=0.01).loss
    return loss, out.sum_sq_probs


def _linear_step(h, w, ids, old, adv, mask):
    out = gkt.linear_token_logprobs(h, w, ids, temperature=0.9, chunk_size=16, sum_sq_probs=True)
    loss = gkt.policy_loss(out.logp, old, adv, mask, spec="trl.dapo", entropies=out.entropy, entropy_coef=0.01).loss
    return loss, out.sum_sq_probs


def _batch(seed, B=3, T=5):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(T)[None, :] < torch.tensor([T, 2, 4])[:, None]
    return dict(
        old=torch.randn(B, T, generator=gen) * 0.1 - 3.0,
        adv=torch.randn(B, generator=gen),
        mask=mask,
        ids=torch.randint(0, 40, (B, T), generator=gen),
        gen=gen,
    )


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_logits_path_matches_eager(backend):
    b = _batch(9)
    base = torch.randn(3, 6, 40, generator=b["gen"])
    args = (b["ids"], b["old"], b["adv"], b["mask"])
    x_e = base.clone().requires_grad_()
    loss_e, sq_e = _logits_step(x_e, *args)
    loss_e.backward()
    x_c = base.clone().requires_grad_()
    loss_c, sq_c = torch.compile(_logits_step, backend=backend, fullgraph=True)(x_c, *args)
    loss_c.backward()
    # The engine runs the same kernels in both; only the glue (x·1.5, the loss scaling) is compiled.
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=0)
    torch.testing.assert_close(sq_c, sq_e, rtol=0, atol=0)
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-6, atol=1e-9)


def test_compiled_inplace_grad_matches_eager():
    b = _batch(10)
    base = torch.randn(3, 6, 40, generator=b["gen"])
    args = (b["ids"], b["old"], b["adv"], b["mask"], True)
    x_e = base.clone().requires_grad_()
    _logits_step(x_e, *args)[0].backward()
    x_c = base.clone().requires_grad_()
    torch.compile(_logits_step, backend="aot_eager", fullgraph=True)(x_c, *args)[0].backward()
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_linear_path_matches_eager(backend):
    b = _batch(11)
    h0, w0 = torch.randn(3, 5, 8, generator=b["gen"]), torch.randn(40, 8, generator=b["gen"]) * 0.5
    args = (b["ids"], b["old"], b["adv"], b["mask"])
    h_e, w_e = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss_e, sq_e = _linear_step(h_e, w_e, *args)
    loss_e.backward()
    h_c, w_c = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss_c, sq_c = torch.compile(_linear_step, backend=backend, fullgraph=True)(h_c, w_c, *args)
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=0)
    torch.testing.assert_close(sq_c, sq_e, rtol=0, atol=0)
    torch.testing.assert_close(h_c.grad, h_e.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w_c.grad, w_e.grad, rtol=1e-6, atol=1e-9)


def test_compiled_frozen_head_only_hidden_grad():
    # weight without requires_grad: the compiled backward asks the engine for grad_hidden only.
    b = _batch(12)
    h = torch.randn(3, 5, 8, generator=b["gen"], requires_grad=True)
    w = torch.randn(40, 8, generator=b["gen"]) * 0.5
    loss, _ = torch.compile(_linear_step, backend="aot_eager", fullgraph=True)(
        h, w, b["ids"], b["old"], b["adv"], b["mask"]
    )
    loss.backward()
    h2 = h.detach().clone().requires_grad_()
    _linear_step(h2, w, b["ids"], b["old"], b["adv"], b["mask"])[0].backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-6, atol=1e-9)
