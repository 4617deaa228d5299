"""python -m vec2pg"""

import sys

from vec2pg.cli import main

sys.exit(main())
