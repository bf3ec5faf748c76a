"""`python -m pipeline` runs the msagg command line."""

from pipeline.cli import main

main(prog_name="msagg")
