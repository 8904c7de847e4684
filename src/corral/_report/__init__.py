"""What a run tells its user: the Report, its summary table, live progress.

    report.py     Report: every Outcome of a batch, in task order, with counts
    summary.py    the human-readable summary table of a Report (rich)
    progress.py   the live progress display (rich), fed by the engine's events
    telemetry.py  the workers' lives (a Pool's WorkerLog, from the event stream) and the
                  run's figures: utilisation, speedup, start-up, idle, concurrency
    records.py    Report.to_records / to_dataframe: one row per attempt
    trace.py      Report.to_trace: Chrome trace-event JSON for Perfetto
    html.py       Report.to_html: one self-contained HTML file

Only the coordinator imports these; rich is imported when something is rendered.
"""
