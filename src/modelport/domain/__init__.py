"""Entities, statuses and their transitions, errors. Imports nothing from the rest of modelport."""
