"""``python -m crossent.lab``: run the lab report (the same as ``crossent report``)."""

import sys

from crossent.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
