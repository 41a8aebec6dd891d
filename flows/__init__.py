"""talktime's I/O: the API client, the emulator, readers and writers, and the Prefect flows."""

__version__ = "0.1.0"
