"""Reliability: crash safety, races, resource abuse, soak (issue 7)."""
