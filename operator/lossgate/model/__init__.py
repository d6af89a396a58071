"""lossgate.model."""
