"""How an output is written: :class:`~rdask.writeoptions.WriteOptions`.

The class and its tables live in :mod:`rdask.writeoptions`, which imports
neither numpy nor GDAL (the CLI builds ``rdask run``'s flags from it, and
``rdask --help`` must stay fast); the outputs import them from here.
"""

from rdask.writeoptions import (
    CHECKPOINT_SECONDS,
    CODEC_LEVELS,
    DRIVERS,
    CodecLevel,
    WriteOptions,
    default_compression_options,
)

__all__ = ["CHECKPOINT_SECONDS", "CODEC_LEVELS", "DRIVERS", "CodecLevel", "WriteOptions",
           "default_compression_options"]
