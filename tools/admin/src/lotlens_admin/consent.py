"""Commands that destroy what no command brings back (tables, secrets) say what they will do and
do it only with the operator's yes: `--yes`, or `yes` typed at the prompt on a terminal. Without
either (a script, a pipe) they change nothing and exit 2; `--dry-run` says it and changes nothing.
The question is asked on stderr, so that stdout may be redirected."""

from __future__ import annotations

import argparse
import sys

NOT_AGREED = 2  # wrong usage: neither --yes nor a terminal to ask on


def add_flags(parser: argparse.ArgumentParser) -> None:
    """`--dry-run` and `--yes` on a destructive command."""
    parser.add_argument("--dry-run", action="store_true", help="say what it would do; change nothing")
    parser.add_argument("--yes", action="store_true",
                        help="do it without asking (required without a terminal to ask on)")


def withheld(args: argparse.Namespace, plan: str) -> int | None:
    """None when the operator agreed to `plan` ("drop ..."); otherwise the exit code to end with,
    nothing done: 0 for a dry run, 1 declined at the prompt, 2 with nobody to ask."""
    if args.dry_run:
        print(f"would {plan}; nothing was changed (dry run)")
        return 0
    if args.yes:
        return None
    if not sys.stdin.isatty():
        print(f"lotlens-admin: this would {plan}; run it with --yes to do it (--dry-run only says it); "
              "nothing was changed", file=sys.stderr)
        return NOT_AGREED
    # The dialogue on stderr, stdout kept for the command's result: with `> out.txt` the question
    # went into the file and the command looked hung.
    print(f"this will {plan}.", file=sys.stderr)
    print("Type yes to do it: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()  # "" at the end of input: not a yes
    if answer.strip().lower() == "yes":
        return None
    print("nothing was changed", file=sys.stderr)
    return 1
