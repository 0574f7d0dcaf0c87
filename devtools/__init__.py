"""Tooling for a developer's machine, not the product: the run command (devtools/run.py), real
Postgres and Redis from PyPI packages (devtools/embedded.py) and the mail catcher. Installed
with the `dev` extra; nothing under webapp/ or tasks/ imports it."""
