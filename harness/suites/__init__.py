"""Suites: the spec and loader (spec), lm-eval's local data (lmeval_data), golden sets (golden), text sets (text)."""
