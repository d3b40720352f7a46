"""Allow ``python -m xcorrflow``."""

import sys

from xcorrflow.cli import main

sys.exit(main())
