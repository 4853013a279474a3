"""Runs, persisted: threads and a durable run queue in SQL (``store``, ``tables``,
``models``), run events in process or in Redis Streams (``events``), and rolling a thread
back over a cancelled run's checkpoints (``checkpoints``)."""
