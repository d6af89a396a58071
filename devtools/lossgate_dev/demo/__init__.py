"""The demo behind `make demo`: real classifiers served with real cross-entropy, a traffic driver
that follows the weights the operator writes, and scenarios that must end as expected."""
