"""The ground floor: config, errors, codec, names, the NATS connection, the embedded server.

Imports nothing of ours above it. Import from the defining modules (`mabeam.core.errors`, ...).
"""
