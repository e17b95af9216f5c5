"""The registry: agent and runner records in JetStream KV, a watch-fed local replica, leases."""
