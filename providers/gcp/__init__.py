"""The GCP provider: Cloud Functions 2nd gen (provider.py) built from a source zip
(source.py). Needs ``pip install 'deployer[gcp]'``."""
