"""lossgate.reconcile."""
