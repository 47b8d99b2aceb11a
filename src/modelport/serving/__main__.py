"""``python -m modelport.serving``: run the model server from the environment (see ``__init__``);
``--standby``: a pre-warmed server that waits for its deployment on stdin (see ``standby``)."""

import sys

if sys.argv[1:] == ["--standby"]:
    from modelport.serving.standby import main
else:
    from modelport.serving.server import main

sys.exit(main())
