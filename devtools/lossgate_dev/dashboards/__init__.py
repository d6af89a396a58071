"""Grafana dashboards built with grafana-foundation-sdk; `make dashboards` writes dashboards/*.json."""
