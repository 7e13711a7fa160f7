"""Fakes of the external services skyrun talks to, written once and shared by every test."""
