"""Benchmark of grpokit.policy_loss (loss + gradient + metrics) against PyTorch eager written as
TRL writes it, with the machine's memory bandwidth measured (CPU) or queried (GPU) in the same run.

    python benchmarks/bench_policy_loss.py [--shapes 64x2048,256x4096] [--threads N] [--append]
    python benchmarks/bench_policy_loss.py --device cuda [--tokens 16:25] [--dtypes float32,bfloat16] [--append]
    python benchmarks/bench_policy_loss.py --matrix [--shapes ...] [--presets ...] [--threads all|N] [--out rows.csv]
        [--backends grpokit,eager,compile] [--sampler-is]  (--quick: a check)

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
import csv
import datetime
import math
import os
import platform
import statistics
import tracemalloc

import numpy as np

import grpokit
import policy_torch
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


def run(B, T, threads, repeat):
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(T // 2, T + 1, size=B)[:, None]
    n_items = float(mask.sum())

    f = resolve("trl.dapo", {"epsilon_high": 0.28, "num_items_in_batch": n_items}).engine_fields()
    t_lp, t_old, t_A, t_mask = (torch.from_numpy(x) for x in (lp, old, A, mask.astype(np.float32)))
    t_torch = median_time(lambda: policy_torch.policy_loss(f, t_lp, t_old, t_A, t_mask), repeat)

    def ours():
        return grpokit.policy_loss(
            lp, old, A, mask, spec="trl.dapo", epsilon_high=0.28, num_items_in_batch=n_items, num_threads=threads
        )

    t_ours = median_time(ours, repeat)
    # parity of the two computations at this shape (float32 sums: relative 1e-4)
    r = ours()
    tl, tg, _ = policy_torch.policy_loss(f, t_lp, t_old, t_A, t_mask)
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
# preset written as TRL / verl write it (policy_torch.py: one function per rule, composed as the engine
# composes them; loss, autograd backward and the preset's metrics), one thread and all threads,
# interleaved in one run; ns per token (B·T) and torch / grpokit ratios. Each preset gets the inputs its
# rules read (entropies, a 2 % token selection; with --sampler-is the sampler's log-probs). Parity of
# the torch loss and gradient with grpokit's is checked before timing. --quick: small shapes, four presets.

QUICK_PRESETS = ["trl.grpo", "trl.dapo", "verl.vanilla", "paper.gspo"]
BACKENDS = ("grpokit", "eager", "compile")


def inputs(B, T, seed=0):
    rng = np.random.default_rng(seed)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    ref = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(T // 2, T + 1, size=B)[:, None]
    return lp, old, ref, A, mask


def extra_inputs(f, B, T, old, sampler_is, selected=0.02):
    """The inputs a preset's rules read besides the log-probs, as grpokit.policy_loss keywords
    (``selected``: the fraction of tokens in a selection)."""
    rng = np.random.default_rng(1)
    extra = {}
    if f["selection"] != "none":
        extra["selection"] = rng.random((B, T)) < selected
    if f["gtpo_entropy"] or f["entropy_coef"] != 0.0 or f["top_entropy_quantile"] < 1.0:
        extra["entropies"] = rng.uniform(0.1, 2.0, size=(B, T)).astype(old.dtype)
    if sampler_is and (f["sampler_is"] != "none" or not math.isnan(f["off_policy_mask_threshold"])):
        # vLLM's log-probs of the sampled tokens (the IS weight and the off-policy mask read them)
        extra["sampling_logp"] = (old + rng.normal(0, 0.05, size=(B, T))).astype(old.dtype)
    return extra


def torch_args(torch, lp, old, A, mask, ref, extra):
    """policy_torch.policy_loss's positional tensors for the same inputs."""
    t = {k: None if v is None else torch.from_numpy(v) for k, v in extra.items()}
    m = torch.from_numpy(mask.astype(lp.dtype))
    return tuple(torch.from_numpy(v) for v in (lp, old, A)) + (
        m,
        torch.from_numpy(ref),
        t.get("entropies"),
        t.get("sampling_logp"),
        t.get("selection"),
    )


def check_parity(name, r, loss, grad):
    """grpokit against the torch formulation in float32: the loss to 1e-4 relative; the gradient to 1e-3
    relative except at a few tokens (at most 1e-5 of them, one at least), where a float32 rounding can
    put a token on the other side of a mask's threshold (trust regions, quantiles)."""
    lt = loss.item()
    if abs(float(r.loss) - lt) > 1e-4 * max(1.0, abs(lt)):
        raise AssertionError(f"{name}: loss grpokit {float(r.loss)} != torch {lt}")
    g, gt = np.asarray(r.grad_logp, np.float64), grad.numpy().astype(np.float64)
    bad = np.abs(g - gt) > 1e-3 * np.abs(gt) + 1e-4 * np.abs(gt).max()
    if bad.sum() > max(1, 1e-5 * g.size):
        raise AssertionError(f"{name}: gradient differs at {int(bad.sum())} of {g.size} tokens")


def bench_row(torch, name, beta, shape, threads, repeat, compiled_cache, sampler_is=False, backends=BACKENDS):
    """Seconds per call of each backend (None where not run) for one preset, beta, shape and thread count."""
    B, T = shape
    f = dict(resolve(name, {"beta": beta}).engine_fields())
    lp, old, ref, A, mask = inputs(B, T)
    extra = extra_inputs(f, B, T, old, sampler_is)
    torch.set_num_threads(threads)

    def ours():
        return grpokit.policy_loss(lp, old, A, mask, spec=name, beta=beta, ref_logp=ref, num_threads=threads, **extra)

    args = torch_args(torch, lp, old, A, mask, ref, extra)
    loss, grad, _ = policy_torch.policy_loss(f, *args)
    check_parity(name, ours(), loss, grad)
    out = dict.fromkeys(BACKENDS)
    if "grpokit" in backends:
        out["grpokit"] = median_time(ours, repeat)
    if "eager" in backends:
        out["eager"] = median_time(lambda: policy_torch.policy_loss(f, *args), repeat)
    if "compile" in backends:
        key = (name, beta, "sampling_logp" in extra)
        if key not in compiled_cache:
            compiled_cache[key] = torch.compile(lambda *a: policy_torch.policy_loss(f, *a), dynamic=False)
        fn = compiled_cache[key]
        try:
            out["compile"] = median_time(lambda: fn(*args), repeat)
        except Exception as exc:  # noqa: BLE001 - report, don't abort the matrix
            print(f"note: torch.compile failed for {name} beta={beta}: {type(exc).__name__}: {str(exc)[:100]}")
    return out


def thread_counts(threads):
    """--threads N: N only; --threads all: one thread and every core, interleaved (issue 17)."""
    if threads == "all":
        return sorted({1, os.cpu_count() or 1})
    return [int(threads)]


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
    backends = tuple(b for b in args.backends.split(",") if b)
    if not set(backends) <= set(BACKENDS) or "grpokit" not in backends:
        raise SystemExit(f"--backends: expected grpokit plus any of eager, compile; got {args.backends!r}")
    print(f"### policy_loss matrix, CPU — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, grpokit {grpokit.__version__} "
        f"({grpokit._core.cpu_simd_level()} loops), torch {torch.__version__}; float32; ns/token "
        "(loss + gradient + metrics); ratio = torch / grpokit.\n"
    )
    print("| preset | beta | B×T | threads | grpokit ns/tok | eager ns/tok (×) | compile ns/tok (×) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    cache = {}
    # interleaved: every configuration of one shape and thread count before the next
    for shape in shapes:
        for threads in thread_counts(args.threads):
            for name in presets:
                for beta in (0.0, 0.04):
                    r = bench_row(torch, name, beta, shape, threads, args.repeat, cache, args.sampler_is, backends)
                    n = shape[0] * shape[1]
                    ns = {k: None if t is None else t / n * 1e9 for k, t in r.items()}
                    rows.append(dict(preset=name, beta=beta, B=shape[0], T=shape[1], threads=threads, **ns))

                    def cell(k, ns=ns):
                        return "n/a" if ns[k] is None else f"{ns[k]:.2f} ({ns[k] / ns['grpokit']:.1f}×)"

                    print(
                        f"| {name} | {beta} | {shape[0]}×{shape[1]} | {threads} | {ns['grpokit']:.2f} | "
                        f"{cell('eager')} | {cell('compile')} |",
                        flush=True,
                    )
    if args.out:
        write_csv(args.out, rows)
    return rows


def write_csv(path, rows):
    """One line per preset, beta, shape and thread count: ns/token of each backend (empty: not run)."""
    cols = ["preset", "beta", "B", "T", "threads"] + [f"{b}_ns_per_token" for b in BACKENDS]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols[:5]] + ["" if r[b] is None else f"{r[b]:.4f}" for b in BACKENDS])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tokens", default="16:25", help="GPU: log2 of N = B×T, as lo:hi")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="GPU: input dtypes")
    ap.add_argument("--shapes", default="64x2048,256x4096")
    ap.add_argument(
        "--threads",
        default="all",
        help="N, or all: every core (--matrix: one thread and every core, interleaved in one run)",
    )
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
    ap.add_argument("--backends", default=",".join(BACKENDS), help="--matrix: grpokit plus any of eager, compile")
    ap.add_argument("--out", default="", help="--matrix: also write the rows to this CSV file")
    args = ap.parse_args()
    if args.device == "cuda":
        return main_gpu(args)
    if args.matrix or args.quick:
        if args.shapes == ap.get_default("shapes"):
            args.shapes = "64x2048,256x4096,1024x8192"
        args.repeat = min(args.repeat, 5)
        return main_matrix(args)
    import torch

    args.threads = thread_counts(args.threads)[-1]
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
