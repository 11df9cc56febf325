"""Double of the WebUI's ``modules`` package (see ``tests/host_double/__init__.py``)."""
