"""The scheduler: one loop thread that places queued jobs (dispatch), watches attempts
(monitor), records what the engine pool finished (the outbox) and runs periodic work."""
