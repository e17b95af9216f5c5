"""The event bus: CloudEvents on `P.events.>`, local fan-out, history and durable subscriptions."""
