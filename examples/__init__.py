"""Worked examples of plugging an environment of your own into worldmodels (see docs/plugging-in.md)."""
