"""``python -m modelport.serving``: run the model server from the environment (see ``__init__``)."""

import sys

from modelport.serving.server import main

sys.exit(main())
