"""``python -m thermo_bridge_sim``: the same as the ``thermo-bridge-sim`` command."""

import sys

from thermo_bridge_sim.simulator import main

sys.exit(main())
