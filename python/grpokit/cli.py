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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpokit", description="GRPO-family policy losses and diagnostics of their hidden biases."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="version, compiled CUDA kernels and visible devices")
    p_info.add_argument("--json", action="store_true", help="print the facts as JSON")
    p_info.set_defaults(func=_cmd_info)
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
