"""verl's actor log-probabilities under the rollout's truncation (grpokit.integrations.verl's
use_sampler_logprobs): verl's own logprobs_from_logits, patched, equals grpokit's fused op and an
independent sort-based reference; unpatched or with truncation off, verl's own result. Needs verl."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl.trainer.ppo.core_algos", exc_type=ImportError)

import verl.utils.torch_functional as verl_F  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.workers.config import RolloutConfig  # noqa: E402

import grpokit.integrations.verl as gv  # noqa: E402
import grpokit.torch as gkt  # noqa: E402
from grpokit.integrations import verl_logprobs  # noqa: E402
from test_verl_integration import actor_config  # noqa: E402


@pytest.fixture(autouse=True)
def _restore():
    yield
    gv.restore_logprobs()


def rollout(**kw):
    return RolloutConfig(name="vllm", **kw)


def sort_reference(logits, labels, k, p):
    """vLLM's order (top-k, then top-p over the survivors' softmax) by a full sort, float64."""
    z = logits.double()
    srt, idx = z.sort(-1)
    if k is not None:
        srt = srt.masked_fill(srt < srt[..., -k : -k + 1], float("-inf"))
    if p is not None:
        drop = srt.softmax(-1).cumsum(-1) <= 1 - p
        drop[..., -1] = False
        srt = srt.masked_fill(drop, float("-inf"))
    masked = torch.empty_like(srt).scatter_(-1, idx, srt)
    return masked.log_softmax(-1).gather(-1, labels[..., None])[..., 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k,p", [(5, None), (None, 0.8), (20, 0.9)])
def test_verl_function_takes_the_rollout_truncation(dtype, k, p):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 64, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, 64, (3, 7), generator=g)
    settings = gv.use_sampler_logprobs(rollout(top_k=k or -1, top_p=p or 1.0, temperature=0.7))
    assert settings == {"top_k": k, "top_p": p, "min_p": None, "sampler": "vllm"}
    got = verl_F.logprobs_from_logits(logits, labels)  # verl's own name, as its engines call it
    want = gkt.token_logprobs(logits.reshape(-1, 64), labels.reshape(-1), top_k=k, top_p=p).logp
    assert got.shape == labels.shape and got.dtype == dtype
    assert torch.equal(got.reshape(-1), want)
    ref = sort_reference(logits, labels, k, p)
    assert torch.equal(torch.isneginf(got), torch.isneginf(ref))
    assert torch.isneginf(got).any() and torch.isfinite(got).any()
    fin = torch.isfinite(ref)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got[fin].double(), ref[fin], atol=tol, rtol=0)
    fsdp = pytest.importorskip("verl.workers.engine.fsdp.transformer_impl")
    assert torch.equal(fsdp.logprobs_from_logits(logits, labels), got)


def test_gradient_through_the_patched_function():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 40, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 40, (6,), generator=g)
    gv.use_sampler_logprobs(rollout(top_k=10, top_p=0.9))
    x = logits.clone().requires_grad_()
    lp = verl_F.logprobs_from_logits(x, labels)
    torch.where(torch.isfinite(lp), lp, 0.0).sum().backward()
    y = logits.clone().requires_grad_()
    ref = sort_reference(y, labels, 10, 0.9)
    torch.where(torch.isfinite(ref), ref, 0.0).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-12, rtol=0)


def test_truncation_off_and_restore_keep_verls_function():
    original = verl_F.logprobs_from_logits
    assert gv.use_sampler_logprobs(rollout()) == {"top_k": None, "top_p": None, "min_p": None, "sampler": "vllm"}
    assert verl_F.logprobs_from_logits is original and not verl_logprobs.active()
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(2, 5, 50, generator=g), torch.randint(0, 50, (2, 5), generator=g)
    # the op without truncation is verl's log-softmax + gather
    torch.testing.assert_close(
        gv.sampler_logprobs_from_logits(logits, labels, **gv.sampler_settings(rollout())),
        original(logits, labels),
        atol=1e-5,
        rtol=0,
    )
    gv.use_sampler_logprobs(rollout(top_k=3))
    assert verl_F.logprobs_from_logits is not original and verl_logprobs.active()
    gv.restore_logprobs()
    assert verl_F.logprobs_from_logits is original and not verl_logprobs.active()


def test_settings_from_a_mapping_and_overrides():
    s = gv.sampler_settings({"top_k": 0, "top_p": 0.95}, min_p=0.1, sampler="sglang")
    assert s == {"top_k": None, "top_p": 0.95, "min_p": 0.1, "sampler": "sglang"}
    with pytest.raises(ValueError, match="overrides: expected top_k, top_p, min_p or sampler"):
        gv.sampler_settings(None, top_n=3)


def test_grpokit_loss_masks_and_counts_tokens_outside_the_kept_set():
    g = torch.Generator().manual_seed(3)
    b, t = 4, 6
    lp = (torch.randn(b, t, generator=g, dtype=torch.float64) * 0.1 - 1).requires_grad_()
    old = lp.detach() + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.05
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.ones(b, t, dtype=torch.float64)
    mask[0, -2:] = 0
    out_new, out_old = torch.zeros(b, t, dtype=torch.bool), torch.zeros(b, t, dtype=torch.bool)
    out_new[1, 2] = out_old[2, 3] = out_new[0, -1] = True  # [0, -1] is already masked: not counted
    fn = core_algos.get_policy_loss_fn("grpokit.verl.vanilla")
    cfg = actor_config("grpokit.verl.vanilla")
    gv.use_sampler_logprobs(rollout(top_k=5))
    loss, metrics = fn(
        old.masked_fill(out_old, float("-inf")), lp.masked_fill(out_new, float("-inf")), adv, mask, "token-mean", cfg
    )
    assert metrics["grpokit/outside_kept_set"] == 2
    assert torch.isfinite(loss)
    gv.restore_logprobs()
    want, _ = fn(old, lp, adv, mask * ~(out_new | out_old), "token-mean", cfg)
    torch.testing.assert_close(loss, want, atol=1e-12, rtol=0)
    loss.backward()
    assert torch.isfinite(lp.grad).all() and lp.grad[1, 2] == 0 and lp.grad[2, 3] == 0


def test_worker_reads_its_rollout_config():
    class Config(dict):
        pass

    class Worker:
        def __init__(self, config, role="actor_rollout"):
            self.config, self.role = config, role

    verl_logprobs.wrap_worker(Worker)
    verl_logprobs.wrap_worker(Worker)  # once only
    w = Worker(Config(rollout={"top_k": 7, "top_p": 1.0}), role="actor")
    assert w.role == "actor" and verl_logprobs.active()
    assert verl_logprobs._settings["top_k"] == 7 and verl_logprobs._settings["top_p"] is None


def test_environment_switch_wraps_verls_worker(monkeypatch):
    import sys
    import types

    class ActorRolloutRefWorker:
        def __init__(self, config, role="actor_rollout"):
            self.config = config

    fake = types.ModuleType("verl.workers.engine_workers")
    fake.ActorRolloutRefWorker = ActorRolloutRefWorker
    monkeypatch.setitem(sys.modules, "verl.workers.engine_workers", fake)
    monkeypatch.setattr(sys.modules["verl.workers"], "engine_workers", fake, raising=False)
    monkeypatch.delenv("GRPOKIT_VERL_TRUNCATION", raising=False)
    verl_logprobs.activate_from_env()
    assert not hasattr(ActorRolloutRefWorker.__init__, "_grpokit_sampler")
    monkeypatch.setenv("GRPOKIT_VERL_TRUNCATION", "1")
    verl_logprobs.activate_from_env()
    ActorRolloutRefWorker({"rollout": {"top_p": 0.5}})
    assert verl_logprobs._settings["top_p"] == 0.5


def test_environment_switch_without_verls_workers_warns(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "verl.workers.engine_workers", None)  # import fails
    monkeypatch.setenv("GRPOKIT_VERL_TRUNCATION", "1")
    with pytest.warns(UserWarning, match="GRPOKIT_VERL_TRUNCATION: verl's workers do not import here"):
        verl_logprobs.activate_from_env()
    assert not verl_logprobs.active()
