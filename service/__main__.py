"""`python -m service`: gunicorn with the service's settings, replacing this process (`demand serve` runs it)."""

import os

from .launch import gunicorn_command

command = gunicorn_command()
os.execv(command[0], command)
