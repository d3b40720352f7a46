"""Commit broker: applies CAPIO-CL-style rules to file events and fires directory commits."""
