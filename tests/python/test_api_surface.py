"""The API's shape: grpokit.torch.policy_loss takes what grpokit.policy_loss takes; one backend policy
(the device of the inputs selects the engine; a GPU array without usable CUDA kernels is an error);
the TRL modules import without a circle; the stubs have no dead bindings."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import numpy as np
import pytest

import grpokit
from dlpack_fakes import FakeProducer
from grpokit import _arrays, _backend, _core

torch = pytest.importorskip("torch")
gkt = pytest.importorskip("grpokit.torch")


# ---- grpokit.torch.policy_loss == grpokit.policy_loss, argument for argument ----------------------


def _params(f):
    return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]


def test_torch_policy_loss_has_the_numpy_signature():
    assert _params(gkt.policy_loss) == _params(grpokit.policy_loss)


def _cov_batch(seed=3, B=4, T=6):
    g = np.random.default_rng(seed)
    mask = np.arange(T)[None, :] < g.integers(2, T + 1, size=B)[:, None]
    lp = np.log(g.uniform(0.05, 0.95, size=(B, T)))
    old = lp + 0.3 * g.standard_normal((B, T))
    sel = (g.uniform(size=(B, T)) < 0.4) & mask
    return lp, old, g.standard_normal(B), mask, sel


@pytest.mark.parametrize("preset", ["verl.clip_cov", "verl.kl_cov"])
def test_selection_presets_from_torch_match_numpy(preset):
    lp, old, A, mask, sel = _cov_batch()
    want = grpokit.policy_loss(lp, old, A, mask, spec=preset, selection=sel, return_per_token=True, return_weights=True)
    x = torch.from_numpy(lp).requires_grad_()
    out = gkt.policy_loss(
        x,
        torch.from_numpy(old),
        torch.from_numpy(A),
        torch.from_numpy(mask),
        spec=preset,
        selection=torch.from_numpy(sel),
        return_per_token=True,
        return_weights=True,
    )
    out.loss.backward()
    assert out.loss.item() == float(want.loss)
    np.testing.assert_array_equal(x.grad.numpy(), want.grad_logp)
    np.testing.assert_array_equal(out.per_token.numpy(), want.per_token)
    np.testing.assert_array_equal(out.weights.numpy(), want.weights)
    assert {k: v.item() for k, v in out.metrics.items()} == {k: float(v) for k, v in want.metrics.items()}
    # the selection matters: without it the rule has no tokens to act on, and the call says so
    with pytest.raises(ValueError, match="selection"):
        gkt.policy_loss(x, torch.from_numpy(old), torch.from_numpy(A), torch.from_numpy(mask), spec=preset)


def test_torch_diagnostic_outputs_carry_no_gradient():
    lp, old, A, mask, _ = _cov_batch(4)
    x = torch.from_numpy(lp).requires_grad_()
    out = gkt.policy_loss(
        x, torch.from_numpy(old), torch.from_numpy(A), torch.from_numpy(mask), spec="trl.dapo", return_per_token=True
    )
    assert out.weights is None and out.per_token is not None and not out.per_token.requires_grad
    assert out.loss.requires_grad
    plain = gkt.policy_loss(x, torch.from_numpy(old), torch.from_numpy(A), torch.from_numpy(mask), spec="trl.dapo")
    assert plain.per_token is None and plain.weights is None


def test_torch_passes_threads_stream_and_check_finite():
    lp, old, A, mask, _ = _cov_batch(5)
    args = (torch.from_numpy(lp), torch.from_numpy(old), torch.from_numpy(A), torch.from_numpy(mask))
    base = gkt.policy_loss(*args, spec="trl.grpo")
    other = gkt.policy_loss(*args, spec="trl.grpo", num_threads=1, stream=0, check_finite=True)
    assert other.loss.item() == base.loss.item()  # CPU: results identical for any thread count
    with pytest.raises(TypeError, match="selection must be a torch tensor"):
        gkt.policy_loss(*args, spec="verl.kl_cov", selection=np.ones(lp.shape, dtype=bool))


def test_torch_selection_under_compile():
    lp, old, A, mask, sel = _cov_batch(6)
    t = {k: torch.from_numpy(v) for k, v in dict(old=old, A=A, mask=mask, sel=sel).items()}

    def f(x):
        return gkt.policy_loss(x, t["old"], t["A"], t["mask"], spec="verl.clip_cov", selection=t["sel"]).loss

    x = torch.from_numpy(lp)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert compiled(x).item() == f(x).item()


def test_torch_op_with_the_new_arguments_passes_opcheck():
    lp, old, A, mask, sel = _cov_batch(7)
    sj = gkt._spec_json("verl.kl_cov", {})
    args = (
        torch.from_numpy(lp).requires_grad_(),
        torch.from_numpy(old),
        torch.from_numpy(A),
        torch.from_numpy(mask),
        None,
        None,
        None,
        None,
        None,
        None,
        sj,
        torch.from_numpy(sel),
        True,
        True,
        1,
        None,
        True,
    )
    torch.library.opcheck(
        torch.ops.grpokit.policy_loss.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


# ---- one backend policy ------------------------------------------------------------------------


def _no_cuda(monkeypatch):
    monkeypatch.setattr(_backend, "_cuda_tried", True)
    monkeypatch.setattr(_backend, "_cuda_module", None)
    monkeypatch.setattr(_backend, "_cuda_error", "grpokit was built without CUDA kernels (test)")


def test_host_arrays_select_the_cpu_engine():
    assert _backend.for_array(np.zeros(3)) is _core
    assert _backend.for_array(torch.zeros(3)) is _core
    assert _backend.for_array(FakeProducer(np.zeros(3))) is _core


def test_gpu_array_without_cuda_kernels_is_an_error_naming_why(monkeypatch):
    _no_cuda(monkeypatch)
    gpu = FakeProducer(np.zeros((2, 3)), device_type=2)
    with pytest.raises(RuntimeError, match=r"inputs are on cuda:0 but grpokit was built without CUDA kernels \(test\)"):
        _backend.for_array(gpu)
    # the loss and the Adam-state diagnostics follow the same policy (no silent host copy)
    m = FakeProducer(np.ones((2, 3)), device_type=2)
    with pytest.raises(RuntimeError, match="inputs are on cuda:0 but grpokit was built without CUDA kernels"):
        grpokit.policy_loss(gpu, None, FakeProducer(np.zeros(2), device_type=2), m)
    from grpokit.diagnostics import _optim

    fake_cuda_tensor = types.SimpleNamespace(device=torch.device("cuda", 0))
    monkeypatch.setattr(_arrays, "_is_torch", lambda x: x is fake_cuda_tensor)
    with pytest.raises(RuntimeError, match="inputs are on cuda:0 but grpokit was built without CUDA kernels"):
        _optim.engine_for(fake_cuda_tensor)


def test_cuda_module_without_a_device_is_an_error(monkeypatch):
    fake = types.SimpleNamespace(device_count=lambda: (0, "no driver (test)"))
    monkeypatch.setattr(_backend, "_cuda_tried", True)
    monkeypatch.setattr(_backend, "_cuda_module", fake)
    with pytest.raises(RuntimeError, match=r"no CUDA device is usable: no driver \(test\)"):
        _backend.for_array(FakeProducer(np.zeros(3), device_type=2))


def test_adam_diagnostics_read_host_state_with_the_cpu_engine():
    from grpokit.diagnostics import _optim

    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.full((4,), 0.5)
    opt.step()
    (s,) = _optim.stepped_states(opt)
    assert _optim.engine_for(s.exp_avg_sq) is _core
    assert _optim._stream(s.exp_avg_sq) == 0
    r, e = _optim.rho(s)
    np.testing.assert_allclose(e.numpy(), r.numpy() / (1 + r.numpy()))


# ---- imports and bindings ----------------------------------------------------------------------


def test_trl_callback_imports_without_the_trainer_module():
    pytest.importorskip("transformers")
    code = (
        "import sys, grpokit.integrations.trl_callback as cb; "
        "assert 'grpokit.integrations.trl' not in sys.modules, 'trl_callback imported trl.py'; "
        "from grpokit.integrations.trl_config import spec_from_config; "
        "assert cb.spec_from_config is spec_from_config"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_dead_bindings():
    assert not hasattr(_core, "adam_state_stats") and not hasattr(_core, "adam_step_split")
    assert hasattr(_core, "adam_state_stats_into") and hasattr(_core, "adam_step_split_into")
