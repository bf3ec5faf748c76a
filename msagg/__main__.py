"""`python -m msagg` runs the msagg command line."""

from msagg.pipeline.cli import main

main(prog_name="msagg")
