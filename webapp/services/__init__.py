"""Domain logic that views and tasks share; no Flask request objects in here."""
