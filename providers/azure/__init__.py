"""The Azure provider (in progress): so far the timer trigger's NCRONTAB dialect (target.py)."""
