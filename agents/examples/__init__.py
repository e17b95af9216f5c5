"""Example agent types, written as models of how to write agents (see docs/AGENTS.md)."""
