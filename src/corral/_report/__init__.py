"""What a run tells its user: the Report, its summary table, live progress.

    report.py     Report: every Outcome of a batch, in task order, with counts
    summary.py    the human-readable summary table of a Report (rich)
    progress.py   the live progress display (rich), fed by the engine's events

Only the coordinator imports these; rich is imported when something is rendered.
"""
