"""Typed errors raised at the boundary, each naming the file, line or option at fault."""


class SCTError(Exception):
    """Base class for every error `sct` raises on bad user input; the command exits with ``exit_code``."""

    exit_code = 1
    # True when the message was already shown (printed by the process that speaks for all of them).
    reported = False


class ConfigError(SCTError, ValueError):
    """A configuration key or value is unknown or invalid (the message names the key)."""


class VideoDecodeError(SCTError):
    """A video file is missing, empty, corrupt or has no usable video stream (names the path)."""


class AnnotationError(SCTError, ValueError):
    """An annotation file is malformed (names the file and line number)."""


class CheckpointError(SCTError):
    """A checkpoint is missing, corrupt or does not fit the model (names the path)."""


class DataQualityError(SCTError):
    """Too many bad videos in a dataset: the message lists them."""


class OutputError(SCTError):
    """An output location cannot be written: a file in the path, read-only, no permission, disk full (names it)."""


class ImageDecodeError(VideoDecodeError):
    """An image (file or shard member) is missing, corrupt, truncated or too large (names it).

    A ``VideoDecodeError`` so that the bad-file policy treats images as it treats videos.
    """


class ExportError(SCTError):
    """A model cannot be exported faithfully, or an exported file is unusable (names the model or file)."""
