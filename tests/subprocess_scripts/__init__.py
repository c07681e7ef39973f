"""Scripts the tests run in fresh processes (``python -m tests.subprocess_scripts.<name> ...``)."""
