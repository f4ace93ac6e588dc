"""Placeholder: adapter under construction."""
