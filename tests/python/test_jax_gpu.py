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


# bfloat16/float16 run on the GPU only (the CPU engine refuses them): the reference is the CPU handler
# in float32 on the very values the GPU reads; tolerances as docs/gpu.md's table for 16-bit outputs.
HALF_TOL = {"bfloat16": (2.0**-7, 2.0**-8), "float16": (2.0**-9, 2.0**-10)}


@pytest.mark.parametrize("half", sorted(HALF_TOL))
@pytest.mark.parametrize("name", ["trl.grpo", "trl.dapo", "paper.gspo", "verl.vanilla", "trl.cispo", "trl.sapo"])
def test_16bit_losses_on_the_gpu_equal_the_cpu_in_float32(name, half):
    b = batch(B=7, T=45, seed=3, dtype=np.float32)
    kw = {k: jnp.asarray(v, dtype=half) for k, v in options_for(name, b).items() if k != "selection"}
    lp, old, A = (jnp.asarray(b[k], dtype=half) for k in ("lp", "old", "A"))
    rtol, atol = HALF_TOL[half]

    def run(lp, old, A, kw):
        return gkj.policy_loss(lp, old, A, b["mask"], spec=name, **kw).loss

    f = jax.jit(jax.value_and_grad(run))
    loss_g, g_g = f(*on(GPU, (lp, old, A, kw)))
    as32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
    loss_c, g_c = f(*on(CPU, as32((lp, old, A, kw))))
    assert g_g.dtype == np.dtype(half) and g_g.devices() == {GPU}
    scale = float(np.abs(np.asarray(g_c)).max()) or 1.0
    np.testing.assert_allclose(float(loss_g), float(loss_c), rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(g_g, np.float32), np.asarray(g_c), rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("half", sorted(HALF_TOL))
def test_16bit_logits_on_the_gpu_equal_the_cpu(half):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(29, 517)) * 3, dtype=half)
    ids = jnp.asarray(rng.integers(0, 517, 29), dtype=jnp.int32)
    f = jax.jit(
        jax.value_and_grad(lambda x: (lambda o: o.logp.sum() + 0.5 * o.entropy.sum())(gkj.token_logprobs(x, ids)))
    )
    (v_g, g_g), (v_c, g_c) = f(jax.device_put(logits, GPU)), f(jax.device_put(logits, CPU))
    rtol, atol = HALF_TOL[half]
    np.testing.assert_allclose(float(v_g), float(v_c), rtol=1e-4)
    assert g_g.dtype == np.dtype(half)
    np.testing.assert_allclose(np.asarray(g_g, np.float32), np.asarray(g_c, np.float32), rtol=rtol, atol=atol)


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
