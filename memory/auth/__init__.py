"""Accounts, persisted: users, API keys and refresh-token families (``tables``), and the
token stores kept in SQL or Redis (``store``)."""
