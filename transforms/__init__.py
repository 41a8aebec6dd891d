"""Pure polars transforms: raw API responses -> items, rejected items, talk-time metrics.

Imports run one way: this package uses polars, pyarrow and the standard library only.
No network, no disk, no clock: everything it needs is passed in.
"""
