"""The Textual app: one App (app.py) over one run source (source.py, rundir.py); docs/development.md
lists the modules."""
