"""brainharmonic-rt: live brain signals to music with learned models, in real time."""

__version__ = "0.1.0"
