"""Outputs and scratch of GPU calls come from the pool of the stream the kernels write on.

torch's / CuPy's caching allocators reuse a block freed on stream S for the next allocation on S at
once; a kernel on another stream writing it could race with reads still queued on S. With an
explicit ``stream=`` the Python layer therefore allocates under that stream (_arrays.allocating_on).
"""

import contextlib

import pytest

from grpokit import _arrays

torch = pytest.importorskip("torch")


def test_no_stream_switch_for_host_arrays_or_the_current_stream(monkeypatch):
    entered = []
    monkeypatch.setattr(torch.cuda, "stream", lambda s: entered.append(s) or contextlib.nullcontext())
    with _arrays.allocating_on(_arrays.Placement("numpy", "cpu"), 0):
        pass
    monkeypatch.setattr(_arrays, "resolve_stream", lambda p, s: 1234)  # the current stream
    with _arrays.allocating_on(_arrays.Placement("torch", "cuda", 0), 1234):
        pass
    assert entered == []


def test_explicit_stream_is_current_while_allocating(monkeypatch):
    """The torch branch (mocked: no GPU needed): an explicit stream other than the current one is made
    current for the allocations, and restored after."""
    log = []

    class FakeExternal:
        def __init__(self, handle, device=None):
            self.handle, self.device = handle, device

    @contextlib.contextmanager
    def fake_stream(s):
        log.append(("enter", s.handle if isinstance(s, FakeExternal) else s))
        yield
        log.append(("exit",))

    monkeypatch.setattr(torch.cuda, "ExternalStream", FakeExternal)
    monkeypatch.setattr(torch.cuda, "stream", fake_stream)
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device=None: "default")
    monkeypatch.setattr(_arrays, "resolve_stream", lambda p, s: 1234)
    p = _arrays.Placement("torch", "cuda", 0)
    with _arrays.allocating_on(p, 777):
        log.append("alloc")
    with _arrays.allocating_on(p, 1):  # DLPack's legacy default stream
        log.append("alloc")
    assert log == [("enter", 777), "alloc", ("exit",), ("enter", "default"), "alloc", ("exit",)]


@pytest.mark.gpu
def test_policy_loss_allocates_on_the_explicit_stream(monkeypatch):
    import grpokit

    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    seen = []
    real_empty = _arrays.empty

    def spy(p, shape, dtype, like=None):
        seen.append(torch.cuda.current_stream(p.device_index).cuda_stream)
        return real_empty(p, shape, dtype, like=like)

    monkeypatch.setattr(_arrays, "empty", spy)
    lp = torch.log(torch.full((4, 33), 0.5, device="cuda"))
    adv = torch.tensor([1.0, -1.0, 0.5, 0.0], device="cuda")
    ext = torch.cuda.Stream()
    torch.cuda.current_stream().synchronize()
    res = grpokit.policy_loss(lp, lp, adv, spec="trl.dapo", stream=ext, return_per_token=True)
    ext.synchronize()
    assert seen and all(h == ext.cuda_stream for h in seen)
    ref = grpokit.policy_loss(lp.cpu(), lp.cpu(), adv.cpu(), spec="trl.dapo")
    assert float(res.loss) == pytest.approx(float(ref.loss), rel=1e-6, abs=1e-7)
    seen.clear()
    out = grpokit.advantages(torch.tensor([1.0, 0.0, 1.0, 1.0], device="cuda"), group_size=2, stream=ext)
    ext.synchronize()
    assert seen and all(h == ext.cuda_stream for h in seen)
    assert out.cpu().tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
