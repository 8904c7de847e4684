"""External programs a task needs (``corral.Service``) and the ports they listen on.

    service.py   Service: start a program on a free port, wait until it is ready, retry on a
                 port conflict, stop it and everything it started (diagram atop)
    ports.py     free_port and port reservations no other corral process is given
    keeper.py    the keeper process that stops a Service's program when its starter dies

Services start inside worker processes (a fixture's set-up) or in the caller; they never
need the coordinator's engine.
"""
