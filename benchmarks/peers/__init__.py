"""Abathur against its peers (ADK session services, LangGraph's store), one process, one run."""
