"""Report: all report prose (prose, narrative) and figures (plots), from results and records."""

from sveval.report.escape import escape_tables_in_notebooks as _escape_tables

_escape_tables()
