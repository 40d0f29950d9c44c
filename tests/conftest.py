"""Shared fixtures: the real-server fixtures come from rvlm.testing.pytest_plugin."""

from __future__ import annotations
