"""grpokit.jax on a CUDA device (the CUDA FFI handler, grpokit._jax_ffi_cuda) against the CPU handler.
Skipped without a JAX GPU backend; scripts/gpu_check.sh runs it on the GPU machine."""

import numpy as np
import pytest

import grpokit

pytestmark = pytest.mark.gpu
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
gkj = pytest.importorskip("grpokit.jax")
from test_jax import batch, options_for  # noqa: E402

try:
    GPU = jax.devices("gpu")[0]
except RuntimeError:
    GPU = None
if GPU is None or "CUDA" not in gkj._HANDLERS:
    pytest.skip("no JAX GPU backend, or grpokit built without its CUDA handler", allow_module_level=True)
CPU = jax.devices("cpu")[0]


def on(device, tree):
    return jax.tree.map(lambda x: jax.device_put(x, device), tree)


@pytest.mark.parametrize(  # M2PO (m2_threshold) runs on the CPU engine only
    "name", sorted(n for n, p in grpokit.presets().items() if p["defaults"]["m2_threshold"] is None)
)
def test_every_preset_on_the_gpu_equals_the_cpu(name):
    b = batch(B=7, T=45, seed=len(name), dtype=np.float32)
    kw = options_for(name, b)

    def run(lp, old, adv, mask, kw):
        out = gkj.policy_loss(lp, old, adv, mask, spec=name, return_per_token=True, **kw)
        return out.loss, out

    f = jax.jit(jax.value_and_grad(run, has_aux=True))
    args = (b["lp"], b["old"], b["A"], b["mask"], kw)
    (loss_g, out_g), g_g = f(*on(GPU, args))
    (loss_c, out_c), g_c = f(*on(CPU, args))
    assert g_g.devices() == {GPU}
    scale = float(np.abs(np.asarray(g_c)).max()) or 1.0
    np.testing.assert_allclose(np.asarray(loss_g), np.asarray(loss_c), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_g), np.asarray(g_c), rtol=2e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray(out_g.per_token), np.asarray(out_c.per_token), rtol=2e-5, atol=1e-6)
    for k, v in out_c.metrics.items():
        np.testing.assert_allclose(float(out_g.metrics[k]), float(v), rtol=1e-4, atol=1e-5, err_msg=k)


def test_logprobs_and_their_gradients_on_the_gpu_equal_the_cpu():
    rng = np.random.default_rng(0)
    hidden, weight = rng.normal(size=(37, 16)).astype(np.float32), rng.normal(size=(301, 16)).astype(np.float32)
    ids = rng.integers(0, 301, 37).astype(np.int32)

    def objective(h, w):
        a = gkj.token_logprobs(h @ w.T, ids)
        b = gkj.linear_token_logprobs(h, w, ids, chunk_size=128)
        return a.logp.sum() + 0.5 * a.entropy.sum() + b.logp.sum() + 0.5 * b.entropy.sum()

    f = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))
    got, want = f(*on(GPU, (hidden, weight))), f(*on(CPU, (hidden, weight)))
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4)
    adv = jax.jit(lambda r: gkj.advantages(r, 4, estimator="trl.grpo"))
    rewards = rng.normal(size=16).astype(np.float32)
    np.testing.assert_allclose(np.asarray(adv(on(GPU, rewards))), np.asarray(adv(on(CPU, rewards))), rtol=1e-5)
