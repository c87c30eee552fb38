"""Everything the tests share that is not a fixture: servers, rows, engines, runners, invariants.

Fixtures live in the conftest files and use these; a test module imports from here, never from
another test module or a conftest (test_support_layout.py keeps it so).
"""
