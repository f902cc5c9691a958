"""Adapters that put exaq_cpu where users already are (``transformers``).

Each adapter imports its framework only when called, so ``exaq_cpu`` keeps
NumPy as its only dependency.
"""
