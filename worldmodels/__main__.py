import sys

from worldmodels.cli import main

sys.exit(main())
