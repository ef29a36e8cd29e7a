import sys

from horizond.cli import main

sys.exit(main())
