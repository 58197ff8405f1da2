"""Keeping what pgbatten installs valid over time: status, renewal, scheduling and CA rotation.

``timeline`` holds the pure decisions (each takes ``now``); the other modules gather facts, plan and apply
through the same machinery as ``secure``.
"""
