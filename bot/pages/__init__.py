"""Run pages, logs and their JSON: read-only views over Temporal and the log store."""
