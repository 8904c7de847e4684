"""Run sweep cases as an external program, for ``corral exec``: start a simulation server on
the port given, drive it with the client, print one JSON line per case, stop the server.

    corral exec 'python run_cases.py --port {port} --token {token} {}' 0:10 10:20 ...

``{port}`` and ``{token}`` are the worker's own (no two programs running at once share a
port). Each argument is a case number or a ``START:STOP`` range of them (``sweep.cases``):
a range amortises the server's start-up over several cases, as the worker's fixture does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from client import SimClient  # noqa: E402
from sweep import SERVER, cases  # noqa: E402


def case_numbers(specs: list[str]) -> list[int]:
    numbers: list[int] = []
    for spec in specs:
        start, colon, stop = spec.partition(":")
        numbers += range(int(start), int(stop)) if colon else [int(spec)]
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("cases", nargs="+", help="case numbers or START:STOP ranges")
    args = parser.parse_args(argv)
    numbers = case_numbers(args.cases)
    table = cases(max(numbers) + 1)
    argv_server = [sys.executable, str(SERVER), "--interactive=zmq",
                   f"--interactivePort={args.port}", f"-z={args.token}"]  # fmt: skip
    server = subprocess.Popen(argv_server, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # "Started the ZeroMQ server on port N", or the error
        if not first.startswith("Started"):
            print(f"the server did not start: {first.strip()}", file=sys.stderr)
            return 1
        with SimClient("127.0.0.1", args.port, args.token) as client:
            for n in numbers:
                print(json.dumps({**table[n], **client.simulate(table[n])}), flush=True)
            client.request("quit")
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
