"""Agents and the runner: the Agent model, mailboxes, supervision, placement, built-in types."""
