"""The monthly compliance report: its figures, charts and rendering."""
