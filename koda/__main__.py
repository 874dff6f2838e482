import sys

from koda.cli import main

sys.exit(main())
