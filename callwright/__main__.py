from callwright.cli import app

app()
