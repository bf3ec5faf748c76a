"""``python -m msagg.models.pretrained --run RUN --corpus CORPUS.md``: copy a finished pretrain run into the package."""

import argparse

from msagg.models.pretrained import SHIPPED, ship

parser = argparse.ArgumentParser(prog="python -m msagg.models.pretrained",
                                 description="Copy a finished pretrain run into the package as a shipped family.")
parser.add_argument("--run", required=True, help="The pretrain run folder.")
parser.add_argument("--name", default="general", choices=sorted(SHIPPED))
parser.add_argument("--corpus", required=True, help="The corpus's CORPUS.md.")
args = parser.parse_args()
print(ship(args.run, args.name, args.corpus))
