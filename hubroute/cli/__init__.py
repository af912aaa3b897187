"""The ``hubroute`` command line."""
