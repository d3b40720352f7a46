"""Errors raised by the dsp package; all derive from :class:`contracts.errors.XcorrflowError`.

Every error says *what* is wrong and *where* (a source name, a SEED id or a window id), and carries those
values as attributes so a caller can dead-letter the item with a precise reason.
"""

from __future__ import annotations

from contracts.errors import XcorrflowError


class DspError(XcorrflowError):
    """Base class of dsp errors."""


class InputError(DspError):
    """Base class of errors about one input item (a record, a product); ``source`` names the item."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


class EmptyRecord(InputError):
    """The input holds no samples at all (empty file, or no trace inside the requested window)."""


class CorruptMiniSEED(InputError):
    """The bytes are not decodable MiniSEED."""


class NonFiniteSamples(InputError):
    """The record holds NaN or infinite samples."""


class UnsupportedSamplingRate(InputError):
    """The sampling rate is out of range, cannot carry the band, or has no exact rational ratio."""


class RecordTooShort(InputError):
    """The record covers less time than one sub-window (cc_len_s) of the processing window."""


class MixedChannels(InputError):
    """One input holds more than one SEED id, or merged traces disagree on the sampling rate."""


class InvalidSeedId(InputError):
    """A SEED id (or a key derived from it) is malformed; keys are only ever derived from valid ids."""


class InvalidWindowId(InputError):
    """A window id is malformed or not aligned to the processing window length."""


class CorruptProduct(InputError):
    """Encoded bytes (a product, a CCF, a stack state) are truncated, altered, or of an unknown version."""


class IncompatibleProducts(DspError):
    """Products that are to be correlated together were made with different grids or parameters."""


class DvvInputError(DspError):
    """A dv/v measurement cannot be made from its inputs; ``code`` is one of :class:`dsp.dvv.model.Reason`.

    The measuring functions of :mod:`dsp.dvv` catch it and return a result that carries the reason, so a
    monitor never crashes on one bad CCF; it is raised only by the helpers that check inputs.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
