"""Slack reporting: one progress message per run, updated in place, with details in its thread.

`blocks` renders (pure, also used by the bot for `/skyrun status`), `baseline` finds the run to
compare metrics with, `reporter` posts. Importing this package imports nothing heavy.
"""
