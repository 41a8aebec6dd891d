"""`talktime report`: one self-contained HTML page of charts over a whole output (no network needed).

Data are aggregated with polars (`data.py`), drawn with Altair and rendered to static SVG by
vl-convert (`charts.py`), and laid out with inline CSS (`page.py`). No transcript text is read.
"""

from flows.report.page import Report, write_report

__all__ = ["Report", "write_report"]
