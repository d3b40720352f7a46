"""Shared contracts of xcorrflow: wire events, topic names, the settings model (with the DSP parameters,
:mod:`contracts.params`) and metrics helpers."""
