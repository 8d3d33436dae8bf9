"""Integrations of grpokit into training frameworks (``grpokit.integrations.trl``)."""
