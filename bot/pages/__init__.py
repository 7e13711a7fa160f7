"""Run pages, logs and their JSON twins: read-only views over Temporal visibility and queries.

`texts` holds what users read, `filters` the list's query-string filters, `views` builds pages
and JSON from a run's progress (no I/O), `loading` reads progress and baselines from Temporal
within deadlines (with small caches), `logs` serves and follows stage logs from the log store,
`rendering` the Jinja templates (loaded on first render) and `routes` the Starlette routes.
"""
