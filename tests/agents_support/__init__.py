"""Agent types used by the agent and runner tests (importable by runner subprocesses too)."""
