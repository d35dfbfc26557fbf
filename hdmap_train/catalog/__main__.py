"""`python -m hdmap_train.catalog [model=<name>|[a,b]]`: the models of conf/model/, as `python -m hdmap_train --help` lists them."""

import sys

from hdmap_train.catalog import main

if __name__ == "__main__":
    sys.exit(main())
