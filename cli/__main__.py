"""``python -m tomosweep.cli``: the ``tomosweep`` command."""

from tomosweep.cli import main

main()
