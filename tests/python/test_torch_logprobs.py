"""grpokit.torch.token_logprobs: autograd against torch's own log_softmax/entropy and gradcheck."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
gkt = pytest.importorskip("grpokit.torch")


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
