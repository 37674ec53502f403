"""The Textual app: one App (app.py) over one run source (source.py, rundir.py); README's Development
section lists the modules."""
