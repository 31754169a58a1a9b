"""Developer tools run by hand or by the Makefile, never by a pipeline stage (no stage imports this package)."""
