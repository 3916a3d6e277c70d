"""Validation against live engines: replay, compare, and timing calibration."""
