"""Executing runs: the run service the LangGraph-compatible routes call (``service``),
the workers that execute queued runs with the graph (``worker``), what they share
(``engine``), gate checks of resume values (``gates``) and event payloads (``serde``).

The queue, the threads and the event bus they work on are persistence, in
:mod:`memory.runs`.
"""
