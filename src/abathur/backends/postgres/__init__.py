"""The PostgreSQL + pgvector backend (issue 14): one server shared by many hosts.

Work in progress: see issue 14's notes for which stores exist. Each store
module mirrors its SQLite sibling in :mod:`abathur.backends.sqlite`, with the
same tables and columns, so the two schemas can be read side by side.
"""
