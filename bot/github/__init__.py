"""The GitHub front door: signed webhooks in, runs and commands out (no GitHub API calls)."""
