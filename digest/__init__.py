"""digest: a self-hosted, personalised research-paper digest service."""

__version__ = "0.1.0"
