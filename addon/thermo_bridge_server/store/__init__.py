"""Storage backends behind one interface."""
