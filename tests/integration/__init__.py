"""Integration tests: each starts Ray, an MLflow server, a Ray job server or moto's S3 server,
or runs the bench scripts end to end (see ``tests/conftest.py``). A package for the reason given
in ``tests/unit/__init__.py``."""
