"""Pure DSP core: preprocessing, whitening, cross-correlation and stacking over numpy arrays (no I/O).

Modules, in the order data flows through them:

- :mod:`dsp.seed`, :mod:`dsp.windows`: SEED id validation and pair keys; window ids ``YYYYMMDDTHHMMSSZ``.
- :mod:`dsp.mseed`: MiniSEED bytes -> validated ObsPy stream (typed errors for every kind of bad input).
- :mod:`dsp.conditioning`: time-domain chain of one window (grid and gaps, detrend, taper, resample,
  band-pass, normalisation).
- :mod:`dsp.spectra`: sub-windows, their FFT, sub-sample alignment and whitening.
- :mod:`dsp.preprocess`: entry points ``preprocess_window`` / ``preprocess_stream`` / ``preprocess_bytes``.
- :mod:`dsp.product`: the per-station, per-window product and its codec (``encode_product``,
  ``decode_product``).
- :mod:`dsp.correlate`: the batched kernel ``correlate`` and the literal ``correlate_pair_reference``.
- :mod:`dsp.stack`: linear and phase-weighted stacks (the running form is :mod:`results.stacks`).
- :mod:`dsp.dvv`: dv/v of each window's CCF against a reference (stretching, MWCS) and the network series.
- :mod:`dsp.codec`: the deterministic npz container under every codec; :mod:`dsp.errors`: the error types.

The parameters of the chain are :class:`contracts.params.ProcessingParams`: the settings model nests them, and
contracts sit below dsp.
"""
