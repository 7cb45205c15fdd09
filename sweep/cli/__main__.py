"""``python -m tomosweep.sweep.cli``: the ``tomosweep`` command."""

from tomosweep.sweep.cli import main

main()
