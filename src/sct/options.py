"""Command-line options every verb spells the same way, and number types checked as they are parsed.

``--out DIR`` is the output folder of every verb that writes files (``--output`` is kept as an alias);
``--json`` prints machine-readable output instead of a table. ``positive_int`` and friends make
argparse reject ``--batch-size -3`` or ``--batch-size 0`` with a message naming the option, before
any work starts.
"""

from __future__ import annotations

import argparse


def _number(kind: type, minimum: float, strict: bool):
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expects {expected}, got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, strict=False)
non_negative_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
non_negative_float = _number(float, 0, strict=False)


def add_out(parser: argparse.ArgumentParser, help_: str, default: str | None = None) -> None:
    """``--out DIR`` (alias ``--output``) into ``args.out``."""
    parser.add_argument("--out", "--output", dest="out", metavar="DIR", default=default, help=help_)


def add_json(parser: argparse.ArgumentParser, what: str = "a table") -> None:
    """``--json``: print JSON instead of ``what``."""
    parser.add_argument("--json", action="store_true", help=f"print JSON instead of {what}")
