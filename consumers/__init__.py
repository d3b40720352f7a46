"""Pair scheduler, correlators and stacker: stream station pairs as their files become ready."""
