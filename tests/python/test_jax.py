"""grpokit.jax: the engine as XLA FFI custom calls, against the NumPy path (the same engine, called
eagerly) and against autodiff of plain jnp formulas."""

import subprocess
import sys

import numpy as np
import pytest

import grpokit
from grpokit._presets import resolve

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
gkj = pytest.importorskip("grpokit.jax")

PRESETS = sorted(grpokit.presets())


def batch(B=5, T=9, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    mask = np.arange(T)[None, :] < lengths[:, None]
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    b = dict(lp=lp, old=lp + rng.normal(0, 0.2, size=(B, T)), ref=lp + rng.normal(0, 0.2, size=(B, T)))
    b.update(H=rng.uniform(0.1, 2.0, size=(B, T)), A=rng.normal(size=B))
    b["smp"] = b["old"] + rng.normal(0, 0.05, size=(B, T))
    b["sel"] = rng.uniform(size=(B, T)) < 0.3
    out = {k: v.astype(dtype) if v.dtype != bool else v for k, v in b.items()}
    out["mask"] = mask
    return out


def options_for(name, b):
    spec = resolve(name, {})
    kw = {"sampling_logp": b["smp"]}
    if spec.kl != "none" and spec.beta != 0.0:
        kw["ref_logp"] = b["ref"]
    if spec.gtpo_entropy or spec.entropy_coef != 0.0 or spec.top_entropy_quantile < 1.0:
        kw["entropies"] = b["H"]
    if spec.selection != "none":
        kw["selection"] = b["sel"]
    return kw


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)


def test_import_grpokit_does_not_import_jax():
    code = "import sys, grpokit; grpokit.policy_loss([[0.0]], None, [1.0]); sys.exit('jax' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_equals_the_numpy_path(name, dtype):
    b = batch(seed=len(name), dtype=dtype)
    kw = options_for(name, b)
    want = grpokit.policy_loss(
        b["lp"], b["old"], b["A"], b["mask"], spec=name, return_per_token=True, return_weights=True, **kw
    )

    def run(lp, ent):
        opts = dict(kw, entropies=ent) if "entropies" in kw else kw
        out = gkj.policy_loss(
            lp, b["old"], b["A"], b["mask"], spec=name, return_per_token=True, return_weights=True, **opts
        )
        return out.loss, out

    ent = b["H"] if "entropies" in kw else None
    for f in (run, jax.jit(run)):  # eagerly, then jitted
        (loss, out), (g_lp, g_ent) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(b["lp"], ent)
        assert loss.dtype == dtype and loss.shape == ()
        np.testing.assert_array_equal(np.asarray(loss), want.loss)
        np.testing.assert_array_equal(np.asarray(g_lp), want.grad_logp)
        np.testing.assert_array_equal(np.asarray(out.per_token), want.per_token)
        np.testing.assert_array_equal(np.asarray(out.weights), want.weights)
        if want.grad_entropy is not None:
            np.testing.assert_array_equal(np.asarray(g_ent), want.grad_entropy)
        elif ent is not None:
            assert not np.asarray(g_ent).any()
        assert set(out.metrics) == set(want.metrics)  # (jit returns dicts in key order)
        for k, v in want.metrics.items():
            assert out.metrics[k].shape == ()
            np.testing.assert_allclose(float(out.metrics[k]), float(v), rtol=1e-6, atol=1e-7, err_msg=k)


def test_options_packed_inputs_and_on_policy_equal_the_numpy_path():
    b = batch(dtype=np.float32)
    lengths = b["mask"].sum(1)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = {k: b[k][b["mask"]] for k in ("lp", "old", "ref")}
    opts = dict(spec="trl.dapo", beta=0.04, epsilon_high=0.28, num_items_in_batch=100)
    want = grpokit.policy_loss(flat["lp"], None, b["A"], ref_logp=flat["ref"], cu_seqlens=cu, **opts)
    f = jax.jit(
        jax.value_and_grad(
            lambda lp: gkj.policy_loss(lp, None, b["A"], ref_logp=flat["ref"], cu_seqlens=cu, **opts).loss
        )
    )
    loss, g = f(flat["lp"])
    np.testing.assert_array_equal(np.asarray(loss), want.loss)
    np.testing.assert_array_equal(np.asarray(g), want.grad_logp)


@pytest.mark.parametrize("num_threads", [0, 1, 2])
def test_thread_counts_give_the_same_bits(num_threads):
    """Under XLA the engine runs on the calling thread unless num_threads asks for more; rows are
    independent, so every count gives the NumPy path's bits."""
    b = batch(dtype=np.float32)
    want = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="trl.grpo", ref_logp=b["ref"])
    f = jax.jit(
        jax.value_and_grad(
            lambda lp: (
                gkj.policy_loss(
                    lp, b["old"], b["A"], b["mask"], spec="trl.grpo", ref_logp=b["ref"], num_threads=num_threads
                ).loss
            )
        )
    )
    loss, g = f(b["lp"])
    np.testing.assert_array_equal(np.asarray(loss), want.loss)
    np.testing.assert_array_equal(np.asarray(g), want.grad_logp)


def test_check_grads_where_the_loss_is_smooth():
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        b = batch(seed=3)
        old = b["lp"] + 0.01  # ratios inside the clip range: smooth there
        for name in ("trl.grpo", "paper.gspo", "trl.sapo"):
            extra = {"ref_logp": b["ref"], "beta": 0.1} if name == "trl.grpo" else {}

            def f(lp, name=name, extra=extra):
                return gkj.policy_loss(lp, old, b["A"], b["mask"], spec=name, **extra).loss

            lp = jnp.where(b["mask"], b["lp"], 0.0)
            check_grads(f, (lp,), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-5)


def test_the_jitted_step_holds_the_custom_call_and_no_callback():
    b = batch(dtype=np.float32)

    def step(lp):
        return jax.grad(lambda x: gkj.policy_loss(x, b["old"], b["A"], b["mask"], spec="paper.dapo").loss)(lp)

    text = jax.jit(step).lower(b["lp"]).as_text()
    assert "stablehlo.custom_call @grpokit" in text
    assert "callback" not in text.lower()


def test_vmap_and_scan_equal_one_call_per_example():
    b = batch(dtype=np.float32)
    lps = np.stack([b["lp"], b["lp"] + 0.1, b["lp"] - 0.05])

    def loss(lp):
        return gkj.policy_loss(lp, b["old"], b["A"], b["mask"], spec="trl.grpo").loss

    want = np.array([float(loss(x)) for x in lps])
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(loss))(lps)), want)
    grads = jax.vmap(jax.grad(loss))(lps)
    for k in range(3):
        np.testing.assert_array_equal(np.asarray(grads[k]), np.asarray(jax.grad(loss)(lps[k])))
    _, scanned = jax.lax.scan(lambda c, x: (c, loss(x)), 0.0, lps)
    np.testing.assert_array_equal(np.asarray(scanned), want)


def test_bad_shapes_and_dtypes_raise_at_trace_time_with_the_numpy_message():
    b = batch(dtype=np.float32)
    bad_adv = np.zeros(4, np.float32)  # B is 5
    with pytest.raises(ValueError) as want:
        grpokit.policy_loss(b["lp"], b["old"], bad_adv, b["mask"])
    with pytest.raises(ValueError) as got:  # lowering traces without running anything
        jax.jit(lambda lp: gkj.policy_loss(lp, b["old"], bad_adv, b["mask"]).loss).lower(b["lp"])
    assert str(got.value) == str(want.value)
    with pytest.raises(TypeError, match="logp: expected dtype float32, float64, bfloat16 or float16, got int32"):
        gkj.policy_loss(np.zeros((2, 3), np.int32), None, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="epsilon"):
        gkj.policy_loss(b["lp"], b["old"], b["A"], spec="trl.grpo", epsilon=-1.0)


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_16bit_losses_pass_the_gpu_rules_at_trace_time_and_the_cpu_refuses_them_at_run_time(half):
    b = batch(dtype=np.float32)
    lp, old, A = (jnp.asarray(b[k], dtype=half) for k in ("lp", "old", "A"))
    f = jax.jit(lambda lp, old, A: gkj.policy_loss(lp, old, A, b["mask"], spec="trl.dapo").loss)
    assert f.lower(lp, old, A).out_info.dtype == np.dtype(half)  # traced with the GPU engine's checks
    with pytest.raises(
        Exception, match=f"logp: expected dtype float32, float64, got {half} \\(bfloat16/float16 are GPU-only\\)"
    ):
        jax.block_until_ready(f(lp, old, A))
    with pytest.raises(TypeError, match=f"old_logp: expected dtype {half} \\(the dtype of logp\\), got float32"):
        f.lower(lp, jnp.asarray(b["old"]), A)


def test_value_errors_of_the_engine_surface_at_run_time():
    b = batch(dtype=np.float32)
    lp = b["lp"].copy()
    lp[0, 0] = np.nan  # a valid position
    with pytest.raises(Exception, match="logp: non-finite value"):
        jax.block_until_ready(gkj.policy_loss(lp, b["old"], b["A"], b["mask"]).loss)


def test_advantages_equal_the_numpy_path(dtype):
    rewards = np.random.default_rng(1).normal(size=12).astype(dtype)
    ids = np.repeat(np.arange(4), 3)[::-1].copy().astype(np.int32)
    for kw in ({"group_size": 3}, {"group_size": 3, "estimator": "trl.grpo"}, {"group_ids": ids, "std": "population"}):
        kw2 = dict(kw, baseline="leave_one_out") if "std" not in kw else kw
        for opts in (kw, kw2):
            got = jax.jit(lambda r, opts=opts: gkj.advantages(r, **opts))(rewards)
            np.testing.assert_array_equal(np.asarray(got), grpokit.advantages(rewards, **opts))
    # every other estimator: tests/python/test_jax_advantages.py


def reference_logprobs(logits, ids, temperature):
    z = jax.nn.log_softmax(logits / temperature, axis=-1)
    logp = jnp.take_along_axis(z, ids[..., None], axis=-1)[..., 0]
    return logp, -(jnp.exp(z) * z).sum(-1)


def test_token_logprobs_values_and_gradients(dtype):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 11)).astype(dtype)
    ids = rng.integers(0, 11, size=(2, 3)).astype(np.int32)
    want = grpokit.token_logprobs(logits, ids, temperature=0.7)
    got = jax.jit(lambda x: gkj.token_logprobs(x, ids, temperature=0.7))(logits)
    np.testing.assert_array_equal(np.asarray(got.logp), want.logp)
    np.testing.assert_array_equal(np.asarray(got.entropy), want.entropy)
    w_lp, w_ent = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))

    def objective(f):
        return lambda x: (f(x)[0] * w_lp).sum() + (f(x)[1] * w_ent).sum()

    g = jax.jit(jax.grad(objective(lambda x: gkj.token_logprobs(x, ids, temperature=0.7))))(logits)
    g_ref = jax.grad(objective(lambda x: reference_logprobs(x, ids, 0.7)))(logits)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=tol, atol=tol)


def test_linear_token_logprobs_values_and_gradients(dtype):
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(2, 4, 6)).astype(dtype)
    weight = rng.normal(size=(13, 6)).astype(dtype)
    ids = rng.integers(0, 13, size=(2, 4)).astype(np.int32)
    want = grpokit.linear_token_logprobs(hidden, weight, ids, chunk_size=5)
    f = lambda h, w: gkj.linear_token_logprobs(h, w, ids, chunk_size=5)  # noqa: E731
    got = jax.jit(f)(hidden, weight)
    np.testing.assert_array_equal(np.asarray(got.logp), want.logp)
    np.testing.assert_array_equal(np.asarray(got.entropy), want.entropy)

    def objective(h, w, op):
        logp, ent = op(h, w)
        return logp.sum() + 0.3 * ent.sum()

    gh, gw = jax.jit(jax.grad(lambda h, w: objective(h, w, f), argnums=(0, 1)))(hidden, weight)
    ref = lambda h, w: reference_logprobs(h @ w.T, ids, 1.0)  # noqa: E731
    rh, rw = jax.grad(lambda h, w: objective(h, w, ref), argnums=(0, 1))(hidden, weight)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(np.asarray(gh), np.asarray(rh), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(rw), rtol=tol, atol=tol)


def test_global_counts():
    m = np.array([[1, 1, 0], [0, 0, 0]], bool)
    assert gkj.global_counts([m, m], dp_size=2) == {"num_items_in_batch": 4.0, "num_sequences": 4.0, "dp_size": 2.0}
    assert gkj.global_counts(m, spec="verl.gspo")["num_sequences"] == 1.0


def test_stub_matches_the_module():
    from test_stubs import _check

    _check(gkj._jax_ffi, "_jax_ffi.pyi")


SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
import grpokit, grpokit.jax as gkj

rng = np.random.default_rng(0)
B, T = 8, 6
mask = np.arange(T)[None, :] < rng.integers(1, T + 1, size=B)[:, None]
lp = np.log(rng.uniform(0.1, 0.9, (B, T))).astype(np.float32)
old = (lp + rng.normal(0, 0.2, (B, T))).astype(np.float32)
adv = rng.normal(size=B).astype(np.float32)
mesh = Mesh(np.array(jax.devices()), ("dp",))
assert mesh.size == 4
for spec in ("paper.dapo", "trl.grpo", "verl.gspo"):
    want = grpokit.policy_loss(lp, old, adv, mask, spec=spec)
    for reduce, dp in ((jax.lax.psum, 1), (jax.lax.pmean, 4)):  # summed or averaged over the shards
        counts = gkj.global_counts(mask, spec=spec, dp_size=dp)
        def shard_loss(lp, old, adv, mask):
            return reduce(gkj.policy_loss(lp, old, adv, mask, spec=spec, **counts).loss, "dp")
        f = jax.shard_map(shard_loss, mesh=mesh, in_specs=(P("dp"),) * 4, out_specs=P())
        loss, g = jax.jit(jax.value_and_grad(f))(lp, old, adv, mask)
        np.testing.assert_allclose(float(loss), float(want.loss), rtol=1e-6, err_msg=spec)
        np.testing.assert_array_equal(np.asarray(g), want.grad_logp, err_msg=spec)
"""


def test_shard_map_runs_per_shard_and_global_counts_make_it_split_invariant():
    subprocess.run([sys.executable, "-c", SHARDED], check=True)


def test_metrics_decode_from_float64_bytes_without_x64():
    values = np.array([0.0, -0.0, 1.5, -2.25e-3, 3.4e38, 1e300, -1e-300, 5e-324, np.inf, -np.inf, np.nan, 0.1])
    with jax.enable_x64(False):
        got = np.asarray(gkj._from_float64_bytes(jnp.asarray(values.view(np.uint8))))
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, values.astype(np.float32))
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(gkj._from_float64_bytes(jnp.asarray(values.view(np.uint8)))), values)


def test_signatures_mirror_the_numpy_path():
    import inspect

    def params(f, drop=()):
        return [(p.name, p.default) for p in inspect.signature(f).parameters.values() if p.name not in drop]

    gpu_only = ("stream", "check_finite")  # the NumPy path's GPU options: XLA owns the stream here
    assert params(gkj.policy_loss) == params(grpokit.policy_loss, gpu_only)
    assert params(gkj.advantages) == params(grpokit.advantages, gpu_only)
    # ...and each of them reaches the op: an array input or a static option (a new argument of the NumPy
    # path shows in these signatures by itself, so this is where one that the op would drop is caught)
    static = {"spec", "return_per_token", "return_weights", "num_threads", "overrides"}
    assert set(inspect.signature(gkj.policy_loss).parameters) == set(gkj._LOSS_INPUTS) | static


@pytest.mark.parametrize(
    "missing, says", [("jax", "needs JAX"), ("grpokit._jax_ffi", "built without its JAX extension")]
)
def test_a_missing_jax_or_extension_names_the_extra(missing, says):
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "try:\n    import grpokit.jax\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert says in out and 'pip install "grpokit[jax]"' in out
