"""lossgate.cli."""
