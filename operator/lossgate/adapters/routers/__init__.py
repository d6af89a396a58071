"""lossgate.adapters.routers."""
