"""The worker's GitHub side: auth, the gate, the reporter, and the comment-command workflow.

Kept free of imports so the bot can import the plain `worker.github.contract` cheaply.
"""
