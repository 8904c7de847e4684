"""A small simulation server that speaks like a modelling compiler in interactive ZeroMQ mode.

    python simserver.py --interactive=zmq --interactivePort=10000 -z=TOKEN

It binds a ZeroMQ REP socket on 127.0.0.1:PORT (exits with status 1 if the port is taken, as
the real compiler does), prints ``Started the ZeroMQ server on port PORT``, and answers JSON
requests that carry the token it was started with (a request with another token is refused:
a client talking to another worker's server notices at once):

    {"token": T, "cmd": "ping"}                       -> {"ok": true, "pid": ..., "port": ...}
    {"token": T, "cmd": "simulate", "params": {...}}  -> {"ok": true, "result": {...}}
    {"token": T, "cmd": "set", "key": K, "value": V}  -> {"ok": true}
    {"token": T, "cmd": "get", "key": K}              -> {"ok": true, "value": V or null}
    {"token": T, "cmd": "quit"}                       -> {"ok": true}, then exits

``simulate`` integrates a damped, driven oscillator (x'' + 2 zeta omega x' + omega^2 x =
force cos(drive t)) with fixed-step RK4, in plain Python: the same parameters always give the
same numbers, whichever server computes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import zmq


def oscillator(params: dict) -> dict:
    zeta = float(params["zeta"])
    omega = float(params["omega"])
    force = float(params.get("force", 0.0))
    drive = float(params.get("drive", 1.0))
    t_end = float(params.get("t_end", 10.0))
    dt = float(params.get("dt", 0.01))

    def deriv(t: float, x: float, v: float) -> tuple[float, float]:
        return v, force * math.cos(drive * t) - 2 * zeta * omega * v - omega * omega * x

    t, x, v = 0.0, float(params.get("x0", 1.0)), 0.0
    peak = abs(x)
    for _ in range(round(t_end / dt)):
        k1 = deriv(t, x, v)
        k2 = deriv(t + dt / 2, x + dt / 2 * k1[0], v + dt / 2 * k1[1])
        k3 = deriv(t + dt / 2, x + dt / 2 * k2[0], v + dt / 2 * k2[1])
        k4 = deriv(t + dt, x + dt * k3[0], v + dt * k3[1])
        x += dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        v += dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        t += dt
        peak = max(peak, abs(x))
    energy = 0.5 * v * v + 0.5 * omega * omega * x * x
    return {"x_end": x, "v_end": v, "peak": peak, "energy_end": energy}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactive", choices=["zmq"], required=True)
    parser.add_argument("--interactivePort", type=int, required=True)
    parser.add_argument("-z", dest="token", required=True)
    return parser.parse_args(argv)


def answer(request: dict, token: str, state: dict, port: int) -> dict:
    if request.get("token") != token:
        return {"ok": False, "error": "wrong token: this is another client's server"}
    cmd = request.get("cmd")
    if cmd == "ping":
        return {"ok": True, "pid": os.getpid(), "port": port}
    if cmd == "simulate":
        return {"ok": True, "result": oscillator(request["params"])}
    if cmd == "set":
        state[request["key"]] = request["value"]
        return {"ok": True}
    if cmd == "get":
        return {"ok": True, "value": state.get(request["key"])}
    if cmd == "quit":
        return {"ok": True}
    return {"ok": False, "error": f"unknown command {cmd!r}"}


def main(argv: list[str]) -> int:
    args = parse(argv)
    context = zmq.Context()
    socket = context.socket(zmq.REP)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.bind(f"tcp://127.0.0.1:{args.interactivePort}")
    except zmq.ZMQError as exc:
        print(f"Error: cannot bind port {args.interactivePort}: {exc}", flush=True)
        return 1
    print(f"Started the ZeroMQ server on port {args.interactivePort}", flush=True)
    state: dict = {}
    while True:
        try:
            request = json.loads(socket.recv())
        except json.JSONDecodeError as exc:
            socket.send_json({"ok": False, "error": f"not JSON: {exc}"})
            continue
        socket.send_json(answer(request, args.token, state, args.interactivePort))
        if request.get("cmd") == "quit" and request.get("token") == args.token:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
