import sys

from hitgan.cli import main

sys.exit(main())
