"""A ``novel`` graph that ``langgraph dev`` can serve (the reference of ``runs_api.py``)."""
