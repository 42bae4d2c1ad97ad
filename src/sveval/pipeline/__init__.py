"""Orchestration: from a parameter file to a published result record.

context (validated spec + data), designs (the DESIGNS registry), record (the typed result record),
evidence, value for money, disclosure control, runner (notebook execution), tracking, planning.
"""
