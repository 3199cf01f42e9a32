"""The local provider: this machine runs deployed functions (provider.py) and
``deployer serve`` fires their schedules and serves their HTTP triggers (server.py)."""
