"""Developer tools for thermo_bridge, installed only for development (never in the add-on image).

- ``devices``: device configs in the protocol's wire form (imports nothing of the protocol).
- ``simulator``: ``thermo-bridge-sim``, simulated thermostats and sensors on a real broker.

This module imports neither, so importing ``thermo_bridge_sim.devices`` never loads the
protocol package under its server name.
"""
