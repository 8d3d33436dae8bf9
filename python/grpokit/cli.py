"""The `grpokit` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import build_info, format_info

    info = build_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_stationary(args: argparse.Namespace) -> int:
    from . import stationary

    floats = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    groups = [x if x.strip().lower() in ("inf", "infinity") else int(x) for x in args.G.split(",")]
    cmp = stationary.compare(floats(args.rewards), floats(args.pi_ref), args.beta, groups,
                             penalty=args.penalty, include_nlhf=args.nlhf)
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
    p_st = sub.add_parser("stationary", help="GRPO's stationary policies next to RLHF for given rewards")
    p_st.add_argument("--rewards", required=True, help="comma-separated rewards, e.g. 1,0,0")
    p_st.add_argument("--pi-ref", required=True, help="comma-separated reference probabilities")
    p_st.add_argument("--beta", type=float, required=True, help="penalty weight > 0")
    p_st.add_argument("--G", default="2,4,8,16,inf", help="group sizes (default 2,4,8,16,inf)")
    p_st.add_argument("--penalty", default="k3", choices=["k3", "k3_is"])
    p_st.add_argument("--nlhf", action="store_true", help="add NLHF's equilibrium")
    p_st.add_argument("--plot", default=None, help="write a bar chart to this file")
    p_st.set_defaults(func=_cmd_stationary)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        print(f"grpokit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
