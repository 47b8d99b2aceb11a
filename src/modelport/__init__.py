"""modelport: turn a trained model into an HTTPS prediction endpoint."""

__version__ = "0.1.0"
