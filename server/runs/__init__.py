"""The run engine: threads, a durable run queue in SQL, workers and run events.

``store`` keeps threads and runs, ``worker`` executes runs with the graph, ``events``
carries their stream events (in-process or Redis Streams), ``service`` is what the
LangGraph-compatible routes call.
"""
