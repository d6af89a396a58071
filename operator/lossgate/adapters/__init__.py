"""lossgate.adapters."""
