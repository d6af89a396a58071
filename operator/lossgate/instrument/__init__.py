"""lossgate.instrument."""
