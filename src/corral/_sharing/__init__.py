"""Read-only data shared with workers without copies (``corral.share``).

    share.py      Shared handles: ownership, release, the per-process attach cache
    layout.py     how an object becomes buffers, and is rebuilt as read-only views
    segments.py   segment files in /dev/shm: create, free-space check, unlink, sweep

A Shared is pickled by name into workers and attached there; this side is imported by
workers (attaching) and coordinators (owning) alike, and never imports the engine.
"""
