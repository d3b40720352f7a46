"""Synthetic seismic deployments with a known answer, for the demo, the tests and the benchmarks."""
