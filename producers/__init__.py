"""Preprocessing workers: raw MiniSEED in, per-station products to the object store, FileCommitted out."""
