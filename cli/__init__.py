"""The ``tractvq`` command line: a thin layer over the Python API (installed as ``tractvq.cli``)."""
