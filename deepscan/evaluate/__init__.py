"""`deepscan evaluate`: metrics (frame and video level), a robustness suite, and reports for one or more methods.

Modules: ``request`` (what is asked, checked), ``evaluation`` (request -> results and files), ``samples`` (data ->
face samples), ``scores`` (cached logits), ``runner`` (samples -> scores -> metrics), ``metrics`` (pure functions
over labels and scores), ``perturb`` (the robustness perturbations), ``report`` (JSON, CSV, PNGs, table rows),
``progress`` (what an evaluation reports while it runs). No terminal library: `deepscan evaluate` shows it.
"""
