"""The ground floor: config, errors, codec, names, the embedded server, and the door to NATS.

The door is the only code that imports nats-py: `connection.py` (the connection and its
messaging methods), `messages.py` (`Message`, `Subscription`), `jetstream.py` (streams,
consumers, stored messages, watches, direct gets), `kv.py` (KV buckets), `gather.py` (replies
gathered on an inbox), `micro.py` (the NATS service API, with nats-py's `nats.micro` types),
`error_map.py` (nats-py errors to ours), `security.py` (auth and TLS options) and
`nats_privates.py` (every nats-py private we read, each checked by a test).

Imports nothing of ours above it. Import from the defining modules (`mabeam.core.errors`, ...).
"""
