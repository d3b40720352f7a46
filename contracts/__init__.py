"""Shared contracts of xcorrflow: wire events, topic names, the settings model and metrics helpers."""
