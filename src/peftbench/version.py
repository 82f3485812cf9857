"""peftbench's version, readable from every layer (recorded in metrics.json and the feature cache's key)."""

__version__ = "0.1.0"
