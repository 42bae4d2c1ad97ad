"""Report: all report prose (prose, narrative) and figures (plots), from results and records."""
