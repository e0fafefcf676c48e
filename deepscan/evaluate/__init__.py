"""`deepscan evaluate`: metrics (frame and video level), a robustness suite, and reports for one or more methods.

Modules: ``metrics`` (pure functions over labels and scores), ``perturb`` (the robustness perturbations),
``runner`` (datasets -> face samples -> cached scores -> metrics), ``report`` (tables, JSON, CSV, PNGs).
"""
