"""Deployment and operations as code: Prometheus rules, Grafana dashboards, scrape targets."""
