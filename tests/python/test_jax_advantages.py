"""grpokit.jax.advantages for every estimator and peer preset: bit-equal to grpokit.advantages (the
same engine entry, called eagerly through NumPy), under jax.jit and eagerly, float32 and float64."""

import numpy as np
import pytest

import grpokit

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
gkj = pytest.importorskip("grpokit.jax")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)


def batch(dtype, B=8, T=6, K=2, seed=0):
    g = np.random.default_rng(seed)
    m = np.arange(T)[None, :] < g.integers(1, T + 1, size=B)[:, None]
    m[3, 1] = False  # a gap (tool output)
    logp = np.log(g.uniform(0.05, 0.95, size=(B, T)))
    return dict(
        R=g.normal(size=B).astype(dtype),
        Rk=g.normal(size=(B, K)).astype(dtype),
        tok=np.where(m, g.normal(size=(B, T)), 0.0).astype(dtype),
        mask=m,
        lengths=m.sum(-1).astype(np.int32),
        base=g.normal(size=B).astype(dtype),
        logp=logp.astype(dtype),
        ref_logp=(logp + g.normal(0, 0.1, size=(B, T))).astype(dtype),
        spp=(np.exp(logp) ** 2 + 0.2).astype(dtype),
        rho=np.exp(g.normal(0, 0.2, size=(B, T))).astype(dtype),
    )


def case(name, b):
    """(rewards, group_size, keyword arrays, static options) of one estimator on the batch."""
    G = 4
    cases = {
        "grpo": (b["Rk"], G, {}, {"reward_weights": [1.0, 0.5], "std": "sample", "epsilon": 1e-4}),
        "maxrl": (np.abs(b["R"]) + 0.5, G, {}, {}),  # pass rates: the group means stay away from 0
        "batch_mean": (b["R"], G, {}, {"baseline": "leave_one_out", "std_scope": "group"}),
        "rloo": (
            b["R"],
            G,
            {"logp": b["logp"], "ref_logp": b["ref_logp"], "mask": b["mask"]},
            {"beta": 0.1, "normalize": True},
        ),
        "reinforce_pp": (b["tok"], None, {"mask": b["mask"]}, {"gamma": 0.9, "return_returns": True}),
        "reinforce_pp_baseline": (b["R"], G, {"mask": b["mask"]}, {}),
        "remax": (b["R"], None, {"mask": b["mask"], "baseline_rewards": b["base"]}, {"return_returns": True}),
        "opo": (b["R"], G, {"lengths": b["lengths"]}, {}),
        "grpo_passk": (b["R"], G, {}, {}),
        "gpg": (b["R"], G, {}, {"f_norm": 2.0}),
        "gdpo": (b["Rk"], G, {"mask": b["mask"]}, {"reward_weights": [1.0, 0.5]}),
        "normalize_then_sum": (b["Rk"], G, {}, {}),
        "optimal_token_baseline": (
            b["R"],
            G,
            {"mask": b["mask"], "logp": b["logp"], "sum_pi_squared": b["spp"], "is_weights": b["rho"]},
            {},
        ),
        "tir_optimal_token_baseline": (
            b["R"],
            G,
            {"mask": b["mask"], "logp": b["logp"], "sum_pi_squared": b["spp"]},
            {"return_returns": True},
        ),
    }
    return cases[name]


# the running estimator updates a host state object in place: no traced form (grpokit.jax refuses it)
HOST_ONLY = ("running",)
ENGINES = sorted({info.name for info in grpokit.ESTIMATORS.values()} - set(HOST_ONLY))


def test_host_only_estimators_are_refused():
    for name in HOST_ONLY:
        with pytest.raises(ValueError, match=f"estimator: '{name}' updates a host state"):
            gkj.advantages(np.zeros(4), estimator=name)


def test_every_estimator_has_a_case():
    b = batch(np.float64)
    for name in ENGINES:
        case(name, b)  # a KeyError names a new estimator without a JAX case


@pytest.mark.parametrize("name", ENGINES)
def test_bit_equal_to_numpy_jit_and_eager(name, dtype):
    b = batch(dtype)
    rewards, G, arrays, static = case(name, b)
    want = grpokit.advantages(rewards, G, estimator=name, **arrays, **static)
    eager = gkj.advantages(rewards, G, estimator=name, **arrays, **static)
    jitted = jax.jit(lambda r, a: gkj.advantages(r, G, estimator=name, **a, **static))(rewards, arrays)
    for got in (eager, jitted):
        for w, x in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            assert np.asarray(x).dtype == w.dtype
            np.testing.assert_array_equal(np.asarray(x), w)


@pytest.mark.parametrize("preset", sorted(p for p, (e, _) in grpokit.ESTIMATOR_PRESETS.items() if e not in HOST_ONLY))
def test_peer_presets(preset):
    b = batch(np.float32)
    info_name = grpokit.ESTIMATOR_PRESETS[preset][0]
    rewards, G, arrays, static = case(grpokit.ESTIMATORS[info_name].name, b)
    static = {k: v for k, v in static.items() if k in ("return_returns", "reward_weights")}
    want = grpokit.advantages(rewards, G, estimator=preset, **arrays, **static)
    got = jax.jit(lambda r, a: gkj.advantages(r, G, estimator=preset, **a, **static))(rewards, arrays)
    for w, x in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
        np.testing.assert_array_equal(np.asarray(x), w)


def test_logprobs_input_and_trace_time_errors():
    b = batch(np.float32)
    logits = np.random.default_rng(2).normal(size=(8, 6, 7)).astype(np.float32)
    ids = np.random.default_rng(3).integers(0, 7, size=(8, 6))
    r = grpokit.token_logprobs(logits, ids, sum_sq_probs=True)
    want = grpokit.advantages(b["R"], 4, estimator="optimal_token_baseline", mask=b["mask"], logprobs=r)
    got = gkj.advantages(b["R"], 4, estimator="optimal_token_baseline", mask=b["mask"], logprobs=r)
    np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="needs mask"):
        jax.jit(lambda x: gkj.advantages(x, estimator="reinforce_pp"))(b["tok"])
    with pytest.raises(TypeError, match="takes no option"):
        gkj.advantages(b["R"], 4, estimator="gpg", gamma=0.9)
    with pytest.raises(ValueError, match="mask"):  # the engine's shape check, at trace time
        jax.jit(lambda x, m: gkj.advantages(x, estimator="reinforce_pp", mask=m))(b["tok"], b["mask"][:, :-1])
    hlo = jax.jit(lambda x: gkj.advantages(x, 4, estimator="gpg")).lower(b["R"]).as_text()
    assert "grpokit" in hlo and "callback" not in hlo
