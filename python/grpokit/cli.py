"""The `grpokit` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional

# ---- argument types: a bad value is argparse's one-line "argument --x: ..." error, before any work ----


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _numbers(text: str) -> List[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,0,0, got {text!r}") from None


def _group_sizes(text: str) -> list:
    out: list = []
    for x in text.split(","):
        x = x.strip()
        if x.lower() in ("inf", "infinity"):
            out.append(x)
        elif x.isdigit() and 2 <= int(x) < 2**31:
            out.append(int(x))
        else:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 2 or inf, got {text!r}")
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import build_info, format_info

    info = build_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):  # checked before minutes of training
        raise ValueError(f"--out: {args.out!r} is an existing file; expected a folder for the plots")
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window from the command line
    from . import demo

    cfg = demo.DemoConfig(
        variants=tuple(args.variants),
        group_size=args.group_size,
        prompts_per_step=args.prompts,
        inner_steps=args.mu,
        steps=args.steps,
        lr=args.lr,
        adam_eps=args.adam_eps,
        weight_decay=args.weight_decay,
        max_len=args.max_len,
        seed=args.seed,
        out_dir=args.out,
        progress=not args.no_progress,
        momentum_guard=args.momentum_guard,
        guard_margin=args.guard_margin,
        guard_hold=args.guard_hold,
    )
    if args.seeds is not None:  # the spread over seeds; plots are of one run (--seed)
        seeds = demo.parse_seeds(args.seeds, first=args.seed)
        print(demo.format_seeds_table(demo.run_seeds(seeds, cfg), seeds))
        return 0
    runs, paths = demo.run_demo(cfg)
    print(demo.format_table(runs))
    print(f"\nplots written to {os.path.abspath(cfg.out_dir)}: " + ", ".join(os.path.basename(p) for p in paths))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ._compare import compare, load_batch

    batch = load_batch(args.file)
    table = compare(batch, presets=args.presets or None)
    print(json.dumps(table.to_dict(), indent=2) if args.json else table)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from ._compare import explain, load_batch

    e = explain(load_batch(args.file), args.a, args.b)
    print(json.dumps(e.to_dict(), indent=2) if args.json else e)
    return 0


def _cmd_stationary(args: argparse.Namespace) -> int:
    from . import stationary

    cmp = stationary.compare(args.rewards, args.pi_ref, args.beta, args.G, penalty=args.penalty, include_nlhf=args.nlhf)
    print(cmp)
    if args.plot:
        cmp.plot().figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpokit", description="GRPO-family policy losses and diagnostics of their hidden biases."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="version, compiled CUDA kernels and visible devices")
    p_info.add_argument("--json", action="store_true", help="print the facts as JSON")
    p_info.set_defaults(func=_cmd_info)
    _add_demo(sub)
    _add_compare(sub)
    p_st = sub.add_parser("stationary", help="GRPO's stationary policies next to RLHF for given rewards")
    p_st.add_argument("--rewards", type=_numbers, required=True, help="comma-separated rewards, e.g. 1,0,0")
    p_st.add_argument("--pi-ref", type=_numbers, required=True, help="comma-separated reference probabilities")
    p_st.add_argument("--beta", type=_positive, required=True, help="penalty weight > 0")
    p_st.add_argument("--G", type=_group_sizes, default="2,4,8,16,inf", help="group sizes (default 2,4,8,16,inf)")
    p_st.add_argument("--penalty", default="k3", choices=["k3", "k3_is"])
    p_st.add_argument("--nlhf", action="store_true", help="add NLHF's equilibrium")
    p_st.add_argument("--plot", default=None, help="write a bar chart to this file")
    p_st.set_defaults(func=_cmd_stationary)
    return parser


def _add_demo(sub) -> None:
    from .demo import DEFAULT_VARIANTS, DemoConfig
    from .optim import HOLDS, MODES

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="train a tiny policy under several GRPO variants; print a comparison, write plots",
        description=(
            "A small synthetic RL problem, no downloads: a tiny autoregressive MLP policy answers one of "
            "a few questions with its first token and may then emit filler tokens until EOS; the reward "
            "checks the answer only, so a length drift comes from the training, not the reward (compare "
            "variants with each other, over --seeds). Each "
            "variant trains a fresh policy (same initial weights, same sampling seed) with AdamW and mu "
            "optimizer steps per sampled batch, with gradients from grpokit's engine. Prints a table (reward, "
            "mean length, length drift, clip-region fraction, overshoot past the clip bound, epsilon-"
            "dominance of Adam) and writes PNG plots to the output folder."
        ),
        epilog=(
            "Variants are loss presets (grpokit.presets(): paper.*, trl.*, verl.*) with optional overrides "
            "and a label: 'trl.grpo', 'trl.dapo:epsilon_high=0.28', 'gspo=trl.grpo:importance_sampling_level="
            "sequence,epsilon=3e-4,epsilon_high=4e-4', 'trl.grpo:scale_rewards=none'. Advantages follow each "
            "preset's home convention (TRL: sample std, eps 1e-4; verl: sample std, eps 1e-6; paper: "
            "population std where the paper divides by sigma)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        metavar="VARIANT",
        help="loss variants to train, each 'preset[:key=value,...]' or 'label=preset[:...]'",
    )
    p.add_argument("-G", "--group-size", type=int, default=d.group_size, help="completions per prompt (G)")
    p.add_argument(
        "--mu",
        type=int,
        default=d.inner_steps,
        help="optimizer steps per sampled batch (mu; 1 = on-policy, the clip region stays empty)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="sampled batches per variant")
    p.add_argument("--prompts", type=int, default=d.prompts_per_step, help="prompts per batch")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initial weights and of the sampling")
    p.add_argument(
        "--seeds",
        default=None,
        metavar="N|S1,S2,...",
        help="train every variant under several seeds (N: --seed, --seed+1, ...; or a list) and print "
        "each column's mean ± std over the seeds and the length drift per seed; no plots",
    )
    p.add_argument("--out", "--output-dir", dest="out", default=d.out_dir, help="folder for the PNG plots")
    p.add_argument("--lr", type=_positive, default=d.lr, help="AdamW learning rate")
    p.add_argument(
        "--adam-eps", type=_positive, default=d.adam_eps, help="AdamW epsilon (try 1e-5 to see epsilon-dominance)"
    )
    p.add_argument("--weight-decay", type=_non_negative, default=d.weight_decay, help="AdamW decoupled weight decay")
    p.add_argument("--max-len", type=int, default=d.max_len, help="maximum completion length (tokens)")
    p.add_argument(
        "--momentum-guard",
        default=d.momentum_guard,
        choices=MODES,
        help="grpokit.optim.MomentumGuard around AdamW: reset the first moment per batch and/or shrink each "
        "step so no token is predicted past its clip bound by more than --guard-margin (docs/diagnostics.md)",
    )
    p.add_argument("--guard-margin", type=float, default=d.guard_margin, help="MomentumGuard margin (ratio units)")
    p.add_argument(
        "--guard-hold",
        default=d.guard_hold,
        choices=HOLDS,
        help="with --momentum-guard project: 'momentum' lets the step's current-gradient part alone push a "
        "token past its bound and removes only what momentum adds (docs/diagnostics.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="loss, gradient norm, clip fractions, prefix bias and weights of many presets on a saved batch",
        description=(
            "Runs every preset (or --presets) on the same saved batch through the engine and prints one "
            "table (grpokit.compare). FILE is a .npz with: rewards (B,) and group_size (scalar), or "
            "advantages (B,); logp (B, T) current per-token log-probs; optional old_logp (B, T) (absent: "
            "on-policy), mask (B, T) valid tokens, completion_ids (B, T) (for the prefix bias), ref_logp "
            "(B, T) (absent: KL terms are off), sampling_logp (B, T). See docs/compare.md."
        ),
    )
    p.add_argument("file", help="the batch, a .npz file")
    p.add_argument(
        "--presets",
        nargs="+",
        metavar="VARIANT",
        help="presets to compare (default: every preset), each 'preset[:key=value,...]'",
    )
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser(
        "explain",
        help="why two presets give different losses and gradients on a saved batch",
        description=(
            "Names the factors behind the difference between presets A and B on the batch in FILE (the .npz "
            "of 'grpokit compare'): normaliser, advantages, correction, clip rule, KL placement, IS weights, other "
            "terms, each measured by switching only that rule of A to B's value (grpokit.explain)."
        ),
    )
    p.add_argument("file", help="the batch, a .npz file (keys as for 'grpokit compare')")
    p.add_argument("a", help="the first preset, 'preset[:key=value,...]'")
    p.add_argument("b", help="the second preset")
    p.add_argument("--json", action="store_true", help="print the factors as JSON")
    p.set_defaults(func=_cmd_explain)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"grpokit {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file that cannot be read or written: name it, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"grpokit {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # every error reaches a command-line user as one line, never a traceback
        print(f"grpokit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
