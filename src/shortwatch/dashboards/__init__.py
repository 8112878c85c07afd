"""Grafana dashboards as code (InfluxQL) and the files that provision them."""
