import sys

from aifabric.cli.main import main

sys.exit(main())
