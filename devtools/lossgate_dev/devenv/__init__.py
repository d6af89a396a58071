"""Local development environment: a real control plane and Prometheus on loopback (tests, demo)."""
