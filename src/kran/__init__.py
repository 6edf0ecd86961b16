"""kran: a job and workflow runner for containerized research tools."""

__version__ = "0.1.0"
