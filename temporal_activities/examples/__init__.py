"""Example workflows; the tests run them (``tests/temporal``)."""
