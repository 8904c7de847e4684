"""The worker side: everything that runs inside a worker process, and nothing else.

    loop.py           the worker's main loop: read a Call, run it, answer (diagram atop)
    execute.py        run one Call's items; the running-item stamp; TaskTimeout inside a Call
    fixture_cache.py  per-worker fixtures: set up on first use, torn down when the loop ends
    handover.py       Ctrl-C: the finished part of the running Call, on a signal
    preload.py        the fork server's preload module (imports this side once)

The boundary is a process boundary: these modules import only the shared vocabulary
(``_codec``, ``_messages``, ``_errors``, ``_outcome``, ``_fixtures``, ``_platform``,
``_proctitle``) and never the coordinator (engine, pool, scheduler, reports) or rich, so
that a worker starts with nothing it does not run. ``tests/test_layering.py`` checks it in a
real worker. The serial backend runs ``execute`` and ``fixture_cache`` in the caller.
"""
