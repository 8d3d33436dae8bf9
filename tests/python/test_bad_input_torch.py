"""The bad-input catalogue's torch rows (test_bad_input_catalogue.py holds the rest): grpokit.torch's
errors, torch tensors the import layer refuses or resolves, double backward."""

import numpy as np
import pytest

import bad_input_rows
import grpokit

torch = pytest.importorskip("torch")
gkt = pytest.importorskip("grpokit.torch")


def _loss(**kw):
    lp = torch.full((2, 3), -1.0, requires_grad=True)
    args = dict(logp=lp, old_logp=lp.detach(), advantages=torch.tensor([1.0, -1.0]))
    args.update(kw)
    return gkt.policy_loss(args.pop("logp"), args.pop("old_logp"), args.pop("advantages"), **args)


def _backward_into(out):
    x, ids = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1])
    saved = grpokit.token_logprobs(x, ids)
    return grpokit.token_logprobs_backward(x, ids, saved, saved.logp * 0 + 1, out=out)


def _neg_view(t):
    """A tensor whose values are -t through torch's lazy negative bit (what z.conj().imag gives)."""
    return torch.complex(torch.zeros_like(t), t).conj().imag


def _double_backward(op="policy_loss"):
    x = torch.full((2, 3), -1.0, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1])
    if op == "policy_loss":
        y = gkt.policy_loss(x, x.detach() - 0.1, torch.tensor([1.0, -1.0], dtype=torch.float64)).loss
    elif op == "token_logprobs":
        y = gkt.token_logprobs(x, ids).logp.sum()
    else:
        y = gkt.linear_token_logprobs(x, torch.ones(4, 3, dtype=torch.float64), ids).logp.sum()
    torch.autograd.grad(y, x, create_graph=True)


CATALOGUE = [
    (
        "torch.policy_loss: unknown preset",
        lambda: _loss(spec="trl.nope"),
        ValueError,
        "unknown loss preset 'trl.nope'",
    ),
    (
        "torch.policy_loss: advantages shape",
        lambda: _loss(advantages=torch.ones(3)),
        ValueError,
        "advantages: expected shape (2,) or (2, 3)",
    ),
    (
        "token_logprobs_backward: expanded torch out",
        lambda: _backward_into(torch.zeros(3, dtype=torch.float64).expand(2, 3)),
        ValueError,
        "the output has overlapping elements",
    ),
    (
        "token_logprobs_backward: negative-bit torch out",
        lambda: _backward_into(_neg_view(torch.zeros(2, 3, dtype=torch.float64))),
        ValueError,
        "out: the tensor has torch's lazy negation/conjugate bit set",
    ),
    (
        "advantages: sparse tensor",
        lambda: grpokit.advantages(torch.ones(4).to_sparse(), group_size=2),
        TypeError,
        "rewards: expected a dense (strided) tensor, got a sparse_coo tensor",
    ),
    (
        "torch.policy_loss: double backward",
        lambda: _double_backward(),
        RuntimeError,
        "grpokit.torch.policy_loss: double backward is not supported",
    ),
    (
        "torch.token_logprobs: double backward",
        lambda: _double_backward("token_logprobs"),
        RuntimeError,
        "grpokit.torch.token_logprobs: double backward is not supported",
    ),
    (
        "torch.linear_token_logprobs: double backward",
        lambda: _double_backward("linear_token_logprobs"),
        RuntimeError,
        "grpokit.torch.linear_token_logprobs: double backward is not supported",
    ),
]


@bad_input_rows.parametrize(CATALOGUE)
def test_bad_input(call, exc, fragment):
    bad_input_rows.check(call, exc, fragment)


# ---- what the import layer resolves rather than refuses (issue 21) ----------------------------------


def test_torch_negative_bit_inputs_are_read_with_their_sign():
    r = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    neg = _neg_view(r)  # values -r, memory +r: torch's __dlpack__ alone would read +r
    assert neg.is_neg()
    expected = grpokit.advantages((-r).numpy(), group_size=2)
    np.testing.assert_array_equal(grpokit.advantages(neg, group_size=2).numpy(), expected)


def test_torch_policy_loss_takes_a_selection_tensor():
    lp = torch.full((2, 3), -1.0, dtype=torch.float64, requires_grad=True)
    sel = torch.tensor([[True, False, True], [False, True, False]])
    out = gkt.policy_loss(
        lp, lp.detach() - 0.1, torch.tensor([1.0, -1.0], dtype=torch.float64), spec="verl.clip_cov", selection=sel
    )
    out.loss.backward()
    ref = grpokit.policy_loss(
        lp.detach().numpy(),
        lp.detach().numpy() - 0.1,
        np.array([1.0, -1.0]),
        spec="verl.clip_cov",
        selection=sel.numpy(),
    )
    np.testing.assert_allclose(lp.grad.numpy(), ref.grad_logp, rtol=0, atol=1e-15)
