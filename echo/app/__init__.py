"""The composition root: picks adapters, opens nurseries, starts services in dependency order."""
