"""Fault and bad-input tests: one test per item of the gate-integrity issue, each
reproducing the fault and asserting the clear message and exit code.

Sections are kept apart by area; tests that need the real SmolLM2, vLLM or lm-eval
are marked slow.
"""
from __future__ import annotations

import pytest  # noqa: F401


# --- Canary integrity: items 2, 3, 13 (plausibility), 14 --------------------------------------


# --- Adapter kinds, vLLM fallback and merge: items 5, 12, 13 ----------------------------------


# --- Reports, CI recipe and smaller items: items 0, 1, 16, 17 ---------------------------------


# --- Inputs, errors, statuses and limits: items 4, 6, 7, 8, 9, 10, 11, 15 ----------------------
