"""lossgate.core."""
