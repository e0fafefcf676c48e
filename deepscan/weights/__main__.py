"""``python -m deepscan.weights split|join|check``: weights split into shards and back (:mod:`.shards`)."""

import sys

from deepscan.weights.shards import main

sys.exit(main())
