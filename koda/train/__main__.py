"""``python -m koda.train``: the module DeepSpeed's launcher starts on every rank."""

import sys

from koda.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
