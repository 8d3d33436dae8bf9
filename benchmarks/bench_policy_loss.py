"""Benchmark of grpokit.policy_loss (loss + gradient + metrics) against PyTorch eager written as
TRL writes it, with the machine's memory bandwidth measured (CPU) or queried (GPU) in the same run.

    python benchmarks/bench_policy_loss.py [--shapes 64x2048,256x4096] [--threads N] [--append]
    python benchmarks/bench_policy_loss.py --device cuda [--tokens 16:25] [--dtypes float32,bfloat16] [--append]
    python benchmarks/bench_policy_loss.py --matrix [--shapes ...] [--presets ...] [--threads N]  (--quick: a check)

GPU (--device cuda): see run_gpu() below.

Method: float32 inputs, TRL's DAPO loss (token ratio, clip 0.2/0.28, global token mean) and its clip
metrics; PyTorch computes the gradient with autograd (forward + backward), grpokit in one call. Each
timing is the median of --repeat runs after a warm-up. Bandwidth: the best of several NumPy copies of a
256 MiB array (bytes read + written per second). grpokit's traffic is counted as the bytes it must move
in one pass: logp, old_logp (4 B each), mask (1 B) and advantages read, grad_logp (4 B) written.
Extra memory: bytes allocated beyond the inputs (tracemalloc sees NumPy's buffers; the engine's O(B)
row state is added from its size).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tracemalloc

import numpy as np

import grpokit
from grpokit._presets import resolve
from timing import median_time


def stream_bandwidth(threads):
    n = 256 * 1024 * 1024 // 8
    a = np.ones(n)
    b = np.empty_like(a)
    best = min(median_time(lambda: np.copyto(b, a), 3) for _ in range(3))
    return 2 * a.nbytes / best  # read + write


def emit(lines, append):
    """Prints the table; with --append, adds it to benchmarks/RESULTS.md too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if append:
        path = os.path.join(os.path.dirname(__file__), "RESULTS.md")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


def torch_trl_dapo(torch, lp, old, A, mask, n_items, eps_lo=0.2, eps_hi=0.28):
    lp = lp.detach().requires_grad_(True)
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_lo, 1 + eps_hi)
    adv = A.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    loss = (per_token_loss * mask).sum() / n_items
    loss.backward()
    with torch.no_grad():
        low = (coef_1 < 1 - eps_lo) & (adv < 0)
        high = (coef_1 > 1 + eps_hi) & (adv > 0)
        m = mask.sum()
        metrics = [(low * mask).sum() / m, (high * mask).sum() / m, ((low | high) * mask).sum() / m]
        seq_low = (low * mask).sum(-1) / mask.sum(-1)
        seq_high = (high * mask).sum(-1) / mask.sum(-1)
        metrics += [seq_low.min(), seq_high.max()]
    return loss, lp.grad, metrics


def run(B, T, threads, repeat):
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(T // 2, T + 1, size=B)[:, None]
    n_items = float(mask.sum())

    t_lp, t_old, t_A, t_mask = (torch.from_numpy(x) for x in (lp, old, A, mask.astype(np.float32)))
    t_torch = median_time(lambda: torch_trl_dapo(torch, t_lp, t_old, t_A, t_mask, n_items), repeat)

    def ours():
        return grpokit.policy_loss(
            lp, old, A, mask, spec="trl.dapo", epsilon_high=0.28, num_items_in_batch=n_items, num_threads=threads
        )

    t_ours = median_time(ours, repeat)
    # parity of the two computations at this shape (float32 sums: relative 1e-4)
    r = ours()
    tl, tg, _ = torch_trl_dapo(torch, t_lp, t_old, t_A, t_mask, n_items)
    assert abs(float(r.loss) - tl.item()) <= 1e-4 * max(1.0, abs(tl.item())), (float(r.loss), tl.item())
    np.testing.assert_allclose(r.grad_logp, tg.numpy(), rtol=1e-4, atol=1e-9)

    tracemalloc.start()
    ours()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row_state = B * 2 * 160  # RowStats + RowResult per row (bytes, upper bound)
    moved = B * T * (4 + 4 + 1 + 4) + B * 4
    return dict(t_torch=t_torch, t_ours=t_ours, moved=moved, peak=peak + row_state, grad_bytes=B * T * 4)


# ---- GPU ------------------------------------------------------------------------------------------


def gpu_peak_bandwidth(torch):
    """The device's theoretical DRAM bandwidth (bytes/s) from its memory clock and bus width."""
    import ctypes

    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not (clock_khz and bus_bits):  # older torch: ask the CUDA runtime
        for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
            try:
                rt = ctypes.CDLL(name)
                break
            except OSError:
                rt = None
        if rt is None:
            return None
        v = ctypes.c_int()
        rt.cudaDeviceGetAttribute(ctypes.byref(v), 36, dev)  # cudaDevAttrMemoryClockRate (kHz)
        clock_khz = v.value
        rt.cudaDeviceGetAttribute(ctypes.byref(v), 37, dev)  # cudaDevAttrGlobalMemoryBusWidth (bits)
        bus_bits = v.value
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0  # double data rate


def cuda_time(torch, fn, repeat):
    """Median device time of fn() (CUDA events on the current stream), after two warm-ups."""
    fn()
    fn()
    ts = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(ts)


def trl_dapo_forward(torch, lp, old, A, mask, n_items, eps_lo=0.2, eps_hi=0.28):
    """TRL's dapo loss and clip metrics (GRPOTrainer._compute_loss's formulation), as one function."""
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_lo, 1 + eps_hi)
    adv = A.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    loss = (per_token_loss * mask).sum() / n_items
    d = coef_1.detach()
    low = (d < 1 - eps_lo) & (adv < 0)
    high = (d > 1 + eps_hi) & (adv > 0)
    m = mask.sum()
    metrics = torch.stack(
        [
            (low * mask).sum() / m,
            (high * mask).sum() / m,
            ((low | high) * mask).sum() / m,
            ((low * mask).sum(-1) / mask.sum(-1)).min(),
            ((high * mask).sum(-1) / mask.sum(-1)).max(),
        ]
    )
    return loss, metrics


def run_gpu(n_tokens, dtype_name, repeat=20, T=2048, liger_vocab=128):
    """One GPU row of the table: N = B×T tokens in `dtype_name` (float32 | bfloat16).

    Returns a dict of seconds (grpokit, eager, compiled, liger or None) and the bytes grpokit must move.
    Every method computes TRL's dapo loss, its gradient in logp and the clip metrics. The lead can call
    this directly. Traffic counted for grpokit: logp, old_logp read (dtype size each), mask (1 B, read in
    both passes), advantages (B), grad_logp written: the minimum for loss + gradient.
    Liger's triton_grpo_loss takes logits (B, T+1, V) and fuses the log-softmax over V, so its time is for
    a larger op (reported with V = liger_vocab): an upper bound of its loss-only cost.
    """
    import torch

    dt = getattr(torch, dtype_name)
    T = min(T, n_tokens)
    B = n_tokens // T
    g = torch.Generator(device="cuda").manual_seed(0)
    lp = torch.log(torch.rand(B, T, device="cuda", generator=g) * 0.9 + 0.05).to(dt)
    old = (lp.float() + 0.1 * torch.randn(B, T, device="cuda", generator=g)).to(dt)
    A = torch.randn(B, device="cuda", generator=g).to(dt)
    lengths = torch.randint(T // 2, T + 1, (B,), device="cuda", generator=g)
    mask = torch.arange(T, device="cuda")[None, :] < lengths[:, None]
    n_items = float(mask.sum().item())
    maskf = mask.to(dt)

    def ours():
        return grpokit.policy_loss(lp, old, A, mask, spec="trl.dapo", epsilon_high=0.28, num_items_in_batch=n_items)

    def eager():
        x = lp.detach().requires_grad_(True)
        loss, metrics = trl_dapo_forward(torch, x, old, A, maskf, n_items)
        loss.backward()
        return loss, x.grad, metrics

    compiled_fwd = torch.compile(lambda x: trl_dapo_forward(torch, x, old, A, maskf, n_items))

    def compiled():
        x = lp.detach().requires_grad_(True)
        loss, metrics = compiled_fwd(x)
        loss.backward()
        return loss, x.grad, metrics

    # parity at this shape before timing (float32: 1e-4 relative; bfloat16 outputs: 2^-7)
    r, (le, ge, _) = ours(), eager()
    tol = 1e-4 if dtype_name == "float32" else 2**-6
    scale = ge.float().abs().max().item()
    assert abs(r.loss.float().item() - le.float().item()) <= tol * max(1.0, abs(le.float().item()))
    assert (r.grad_logp.float() - ge.float()).abs().max().item() <= tol * scale + 1e-12

    out = dict(B=B, T=T, t_ours=cuda_time(torch, ours, repeat), t_eager=cuda_time(torch, eager, repeat))
    try:
        out["t_compiled"] = cuda_time(torch, compiled, repeat)
    except Exception as exc:  # noqa: BLE001 - report, don't abort the table
        out["t_compiled"], out["compiled_error"] = None, f"{type(exc).__name__}: {exc}"[:120]
    out["t_liger"] = None
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss

        logits = torch.randn(B, T + 1, liger_vocab, device="cuda", generator=g).to(dt).requires_grad_(True)
        ids = torch.randint(0, liger_vocab, (B, T), device="cuda", generator=g)

        def liger():
            loss = triton_grpo_loss(
                logits,
                old.float(),
                None,
                ids,
                A.float(),
                mask.int(),
                temperature=1.0,
                beta=0.0,
                eps_low=0.2,
                eps_high=0.28,
                inplace=True,
            )
            (loss[0] if isinstance(loss, tuple) else loss).backward()

        out["t_liger"] = cuda_time(torch, liger, repeat)
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001
        out["liger_error"] = f"{type(exc).__name__}: {exc}"[:120]
    es = torch.finfo(dt).bits // 8
    out["moved"] = B * T * (2 * es + 2 + es) + B * es
    return out


def main_gpu(args):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    peak = gpu_peak_bandwidth(torch)
    name = torch.cuda.get_device_name()
    lo, hi = (int(x) for x in args.tokens.split(":"))
    lines = [
        f"### policy_loss, GPU — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{name}, peak DRAM bandwidth "
        f"{f'{peak / 1e9:.0f} GB/s' if peak else 'unknown (could not query)'} (memory clock × bus width), "
        f"grpokit {grpokit.__version__}, torch {torch.__version__}. TRL dapo loss + gradient + clip metrics; "
        "median of CUDA-event timings.",
        "",
        "| N = B×T | dtype | grpokit µs | GB/s | fraction of peak | eager µs (×) | torch.compile µs (×) | "
        "Liger µs (×) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype_name in args.dtypes.split(","):
        for k in range(lo, hi + 1):
            r = run_gpu(1 << k, dtype_name, repeat=args.repeat)
            gbs = r["moved"] / r["t_ours"]

            def cell(t):
                return "n/a" if t is None else f"{t * 1e6:.0f} ({t / r['t_ours']:.1f}×)"

            lines.append(
                f"| 2^{k} ({r['B']}×{r['T']}) | {dtype_name} | {r['t_ours'] * 1e6:.0f} | {gbs / 1e9:.0f} | "
                f"{(gbs / peak) if peak else float('nan'):.0%} | {cell(r['t_eager'])} | {cell(r['t_compiled'])} | "
                f"{cell(r['t_liger'])} |"
            )
            for key in ("compiled_error", "liger_error"):
                if key in r:
                    print(f"note: 2^{k} {dtype_name}: {key}: {r[key]}")
    emit(lines, args.append)


# ---- the preset matrix (--matrix) -------------------------------------------------------------------
#
# Every preset × beta ∈ {0, 0.04} × shape, grpokit against PyTorch eager and torch.compile of the same
# preset written as TRL / verl write it (whole-array torch: ratio, surrogate, KL, masked aggregation,
# then autograd), one thread and all threads, interleaved in one run; ns per token (B·T) and torch /
# grpokit ratios. The torch formulation is built from the preset's own rule row for the rules peers
# write as whole-array code (token / sequence / sequence-token / sequence-sum ratios, clip with δ and
# dual clip, SAPO, log-π surrogates with the one / ratio / clip / cap weights, the KL estimators, every
# aggregation, and with --sampler-is the sampler IS weight per token or per sequence: sampling_logp is
# then passed to every preset with a sampler IS rule); a preset that also needs other inputs or rules
# (entropies, selections, OPSM, CPPO, VESPO, DPPO, GMPO, GTPO, DRO, TOPR, a trust region) is timed for
# grpokit only and shows n/a for torch. Parity with the torch loss and gradient is asserted before
# timing. --quick: two small shapes, four presets.

QUICK_PRESETS = ["trl.grpo", "trl.dapo", "verl.vanilla", "paper.gspo"]


def torch_supported(f):
    """Whether the whole-array torch formulation below covers this rule row with plain inputs."""
    surrogate_ok = f["surrogate"] in ("clip", "unclipped", "sapo") or (
        f["surrogate"] == "logp" and f["logp_weight"] in ("one", "ratio", "clip", "cap")
    )
    no_opsm = f["off_policy_mask_threshold"] != f["off_policy_mask_threshold"]  # NaN: off
    extras_off = (
        f["selection"] == "none"
        and not f["gtpo_entropy"]
        and f["top_entropy_quantile"] >= 1.0
        and f["prune_threshold"] == -np.inf
        and f["dro_beta"] == 0.0
        and f["entropy_coef"] == 0.0
        and f["trust_region"] == "none"
    )
    return surrogate_ok and no_opsm and extras_off


def torch_is_weight(torch, f, old, smp, m):
    """TRL's vLLM importance-sampling weight (detached): ρ = exp(ℓ_old − ℓ_smp) per token, or exp of its
    masked row sum per sequence; truncated to [is_min, is_max] or zeroed outside it."""
    d = torch.nan_to_num(old - smp, nan=0.0)
    if f["sampler_is"].startswith("sequence"):
        d = (d * m).sum(-1, keepdim=True)
    rho = torch.exp(d)
    lo, hi = f["is_min"], f["is_max"]
    if f["sampler_is"].endswith("truncate"):
        return torch.clamp(rho, lo, hi)
    return torch.where((rho < lo) | (rho > hi), torch.zeros_like(rho), rho)


def torch_loss(torch, f, lp, old, A, mask, ref, smp=None):
    """The preset's loss, gradient and ratio / clip metrics, as whole-array torch (TRL / verl style).
    smp: sampling_logp (the sampler IS weight multiplies the policy term), or None."""
    x = lp.detach().requires_grad_(True)
    m = mask
    L = m.sum(-1).clamp(min=1.0)
    d = (x - old).clamp(f["log_ratio_min"], f["log_ratio_max"])
    if f["ratio"] == "token":
        r = torch.exp(d)
    else:
        s = (d * m).sum(-1, keepdim=True)
        u = s if f["ratio"] == "sequence_sum" else s / L.unsqueeze(-1)
        if f["ratio"] == "sequence_token":  # value s_i, gradient s_i·∇ℓ_t
            r = torch.exp(u.detach() + x - x.detach())
        else:
            r = torch.exp(u).expand_as(x)
    a = A.unsqueeze(-1)
    el, eh = f["epsilon_low"], f["epsilon_high"]
    metrics = {}
    if f["surrogate"] == "clip":
        rt = torch.clamp(r, max=f["delta"])
        rc = torch.clamp(r, 1 - el, 1 + eh)
        pg = -torch.min(rt * a, rc * a)
        if f["clip_ratio_c"] != np.inf:  # verl's dual clip for A < 0
            pg = torch.where(a < 0, torch.min(pg, -a * f["clip_ratio_c"]), pg)
        with torch.no_grad():
            low = ((r < 1 - el) & (a < 0)).float()
            high = ((r > 1 + eh) & (a > 0)).float()
            n = m.sum()
            metrics["clip_low"] = (low * m).sum() / n
            metrics["clip_high"] = (high * m).sum() / n
    elif f["surrogate"] == "sapo":
        tau = torch.where(a > 0, torch.tensor(f["sapo_temperature_pos"]), torch.tensor(f["sapo_temperature_neg"]))
        pg = -a * 4.0 / tau * torch.sigmoid(tau * (r - 1.0))
    elif f["surrogate"] == "logp":
        w = {
            "one": torch.ones_like(r),
            "ratio": r,
            "clip": torch.clamp(r, 1 - el, 1 + eh),
            "cap": torch.clamp(r, max=eh),
        }[f["logp_weight"]].detach()
        pg = -a * w * x
    else:
        pg = -a * r
    if smp is not None and f["sampler_is"] != "none":
        w_is = torch_is_weight(torch, f, old, smp, m)
        pg = pg * w_is
        with torch.no_grad():
            metrics["is_mean"] = (w_is.expand_as(m) * m).sum() / m.sum()
    phi = pg
    if f["kl"] != "none" and f["beta"] != 0.0:
        lc = f["kl_log_clamp"] if f["kl"] == "k3" else np.inf
        z = (ref - x).clamp(-lc, lc)
        k = {"k1": -z, "k2": 0.5 * z * z, "k3": torch.exp(z) - z - 1.0, "abs": z.abs()}[f["kl"]]
        if f["kl"] == "k3" and f["kl_value_clamp"] != np.inf:
            k = k.clamp(-f["kl_value_clamp"], f["kl_value_clamp"])
        if f["kl_is_corrected"]:
            k = k * r
        phi = phi + f["beta"] * k
        with torch.no_grad():
            metrics["kl"] = (k * m).sum() / m.sum()
    agg = f["aggregation"]
    B = float(m.shape[0])
    scale = f["dp_size"] / (f["gradient_accumulation_steps"] if f["divide_by_ga"] else 1.0)
    if agg == "token_mean":
        loss = (phi * m).sum() / m.sum().clamp(min=1.0)
    elif agg == "token_sum":
        loss = (phi * m).sum()
    elif agg == "seq_mean_token_mean":
        loss = ((phi * m).sum(-1) / L).sum() / B
    elif agg == "seq_mean_token_sum":
        loss = (phi * m).sum() / B
    else:
        C = f["max_completion_length"] if f["max_completion_length"] > 0 else float(m.shape[1])
        loss = (phi * m).sum() / (B * C)
    loss = loss * scale
    loss.backward()
    with torch.no_grad():
        rm = r.detach()
        metrics["ratio_mean"] = (rm * m).sum() / m.sum()
        metrics["ratio_min"] = torch.where(m > 0, rm, torch.inf).min()
        metrics["ratio_max"] = torch.where(m > 0, rm, -torch.inf).max()
    return loss, x.grad, metrics


def inputs(B, T, seed=0):
    rng = np.random.default_rng(seed)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    ref = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(T // 2, T + 1, size=B)[:, None]
    return lp, old, ref, A, mask


def bench_row(torch, name, beta, shape, threads, repeat, compiled_cache, sampler_is=False):
    B, T = shape
    f = dict(resolve(name, {"beta": beta}).engine_fields())
    lp, old, ref, A, mask = inputs(B, T)
    torch.set_num_threads(threads)

    extra = {}  # the inputs a preset's rules read besides the log-probs (as the tests give them)
    rng = np.random.default_rng(1)
    if f["selection"] != "none":
        extra["selection"] = rng.random((B, T)) < 0.02
    if f["gtpo_entropy"] or f["entropy_coef"] != 0.0 or f["top_entropy_quantile"] < 1.0:
        extra["entropies"] = rng.uniform(0.1, 2.0, size=(B, T)).astype(np.float32)
    smp = None
    if sampler_is and f["sampler_is"] != "none":  # vLLM's log-probs of the sampled tokens
        smp = (old + rng.normal(0, 0.05, size=(B, T))).astype(np.float32)
        extra["sampling_logp"] = smp

    def ours():
        return grpokit.policy_loss(lp, old, A, mask, spec=name, beta=beta, ref_logp=ref, num_threads=threads, **extra)

    out = {"grpokit": median_time(ours, repeat), "eager": None, "compile": None}
    if not torch_supported(f):
        return out
    t_lp, t_old, t_ref, t_A = (torch.from_numpy(v) for v in (lp, old, ref, A))
    t_m = torch.from_numpy(mask.astype(np.float32))
    t_smp = None if smp is None else torch.from_numpy(smp)
    r = ours()
    loss, grad, _ = torch_loss(torch, f, t_lp, t_old, t_A, t_m, t_ref, t_smp)
    assert abs(float(r.loss) - loss.item()) <= 1e-4 * max(1.0, abs(loss.item())), (name, float(r.loss), loss.item())
    np.testing.assert_allclose(r.grad_logp, grad.numpy(), rtol=1e-3, atol=1e-4 * float(np.abs(grad.numpy()).max()))
    out["eager"] = median_time(lambda: torch_loss(torch, f, t_lp, t_old, t_A, t_m, t_ref, t_smp), repeat)
    key = (name, beta, smp is not None)
    if key not in compiled_cache:
        compiled_cache[key] = torch.compile(lambda *a: torch_loss(torch, f, *a), dynamic=False)
    fn = compiled_cache[key]
    try:
        out["compile"] = median_time(lambda: fn(t_lp, t_old, t_A, t_m, t_ref, t_smp), repeat)
    except Exception as exc:  # noqa: BLE001 - report, don't abort the matrix
        print(f"note: torch.compile failed for {name} beta={beta}: {type(exc).__name__}: {str(exc)[:100]}")
    return out


def main_matrix(args):
    import torch

    for knob in ("cache_size_limit", "recompile_limit"):  # one compiled graph per preset, beta and shape
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 1024)

    presets = [p for p in args.presets.split(",") if p] or sorted(grpokit.presets())
    shapes = args.shapes
    if args.quick:
        presets = [p for p in presets if p in QUICK_PRESETS] or QUICK_PRESETS
        shapes, args.repeat = "8x256,16x512", min(args.repeat, 2)
    shapes = [tuple(int(v) for v in s.split("x")) for s in shapes.split(",")]
    thread_counts = sorted({1, args.threads})
    print(f"### policy_loss matrix, CPU — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, grpokit {grpokit.__version__} "
        f"({grpokit._core.cpu_simd_level()} loops), torch {torch.__version__}; float32; ns/token "
        "(loss + gradient + metrics); ratio = torch / grpokit.\n"
    )
    print("| preset | beta | B×T | threads | grpokit ns/tok | eager ns/tok (×) | compile ns/tok (×) |")
    print("|---|---|---|---|---|---|---|")
    cache = {}
    # interleaved: every configuration of one shape and thread count before the next
    for shape in shapes:
        for threads in thread_counts:
            for name in presets:
                for beta in (0.0, 0.04):
                    r = bench_row(torch, name, beta, shape, threads, args.repeat, cache, args.sampler_is)
                    n = shape[0] * shape[1]

                    def cell(t, r=r, n=n):
                        return "n/a" if t is None else f"{t / n * 1e9:.2f} ({t / r['grpokit']:.1f}×)"

                    print(
                        f"| {name} | {beta} | {shape[0]}×{shape[1]} | {threads} | {r['grpokit'] / n * 1e9:.2f} | "
                        f"{cell(r['eager'])} | {cell(r['compile'])} |",
                        flush=True,
                    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tokens", default="16:25", help="GPU: log2 of N = B×T, as lo:hi")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="GPU: input dtypes")
    ap.add_argument("--shapes", default="64x2048,256x4096")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--append", action="store_true", help="append the results to benchmarks/RESULTS.md")
    ap.add_argument("--matrix", action="store_true", help="every preset × beta × shape against eager and compile")
    ap.add_argument("--quick", action="store_true", help="--matrix on small shapes and four presets (a check)")
    ap.add_argument("--presets", default="", help="--matrix: comma-separated preset names (default: all)")
    ap.add_argument(
        "--sampler-is",
        action="store_true",
        help="--matrix: pass sampling_logp to the presets with a sampler IS rule (TRL's vLLM IS correction)",
    )
    args = ap.parse_args()
    if args.device == "cuda":
        return main_gpu(args)
    if args.matrix or args.quick:
        if args.shapes == ap.get_default("shapes"):
            args.shapes = "64x2048,256x4096,1024x8192"
        args.repeat = min(args.repeat, 5)
        return main_matrix(args)
    import torch

    bw = stream_bandwidth(args.threads)
    lines = [
        f"### policy_loss, CPU — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), threads={args.threads}, "
        f"grpokit {grpokit.__version__} ({grpokit._core.cpu_simd_level()} loops), torch {torch.__version__}, "
        f"NumPy {np.__version__}. "
        f"Streaming bandwidth (NumPy copy, same run): {bw / 1e9:.1f} GB/s.",
        "",
        "| B×T | PyTorch eager (TRL dapo, fwd+bwd+metrics) ms | grpokit ms | speed-up | grpokit GB/s | "
        "fraction of bandwidth | extra memory (MB) (grad output) |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in args.shapes.split(","):
        B, T = (int(x) for x in shape.split("x"))
        r = run(B, T, args.threads, args.repeat)
        gbs = r["moved"] / r["t_ours"]
        lines.append(
            f"| {B}×{T} | {r['t_torch'] * 1e3:.2f} | {r['t_ours'] * 1e3:.2f} | {r['t_torch'] / r['t_ours']:.1f}× | "
            f"{gbs / 1e9:.1f} | {gbs / bw:.0%} | {r['peak'] / 1e6:.1f} ({r['grad_bytes'] / 1e6:.1f}) |"
        )
    emit(lines, args.append)


if __name__ == "__main__":
    main()
