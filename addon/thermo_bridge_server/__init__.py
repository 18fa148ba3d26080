"""thermo_bridge add-on server."""
