"""``fmt schemas``: the same as ``fmt schema list``."""

from __future__ import annotations

import argparse

from ._common import wrap
from .schema import run_list as run

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = wrap("The same as `fmt schema list`.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="as a JSON list")
