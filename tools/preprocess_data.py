#!/usr/bin/env python
"""Tokenize text/.py/.jsonl/.parquet files and datasets save_to_disk directories into KODA token shards
(same as ``koda preprocess``).

    python tools/preprocess_data.py --tokenizer cache/tok.model --output data/shards --sources 'src/**/*.py'
"""

import sys

from koda.data.preprocess_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
