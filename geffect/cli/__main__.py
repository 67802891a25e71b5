"""``python -m geffect.cli ...``: the ``geffect`` command, for launchers that take a module
(``accelerate launch -m geffect.cli unlearn ...``, ``torchrun -m geffect.cli ...``)."""

import sys

from geffect.cli import main

sys.exit(main())
