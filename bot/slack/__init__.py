"""The Slack front door: `/skyrun` slash commands and the progress message's buttons (Bolt).

`commands` parses (pure), `access` decides who may act (pure), `texts` holds every reply, and
`app` wires them into a Bolt `AsyncApp` mounted at `POST /slack/events`.
"""
