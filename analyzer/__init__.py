"""Canary Analyzer: anytime-valid canary-vs-stable judgement and traffic shifting on any mesh."""

__version__ = "0.1.0"
