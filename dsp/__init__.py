"""Pure DSP core: preprocessing, whitening, cross-correlation and stacking over numpy arrays (no I/O)."""
