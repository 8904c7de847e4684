"""A script whose BatchError is not caught: Python prints it with the worker's traceback.

python uncaught_batch_error.py
"""

from __future__ import annotations

import corral


def parse_number(text: str) -> int:
    return int(text)


if __name__ == "__main__":
    corral.map(parse_number, ["1", "two", "3"], workers=2)
