"""``python -m dynosim.cli``."""

from dynosim.cli import main

main()
