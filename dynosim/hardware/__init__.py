"""What one worker is on named hardware: model × GPU system × engine × parallelism.

Owns the model shape (``model.py``, from a Hugging Face config), the catalogue
of systems, engines and models that aiconfigurator-core's database covers
(``catalog.py``), the memory arithmetic that sizes the KV cache
(``memory.py``), the user-facing hardware section of an engine
(``spec.py``), and the pass-time sources priced from it: the database
(``aic.py``) and a labelled roofline estimate (``roofline.py``).

May import numpy, pydantic, yaml and aiconfigurator-core (lazily: the database
loads in about a second and only when a pass is priced). Imports nothing else
of dynosim, so the engines, the planner and the sweeps can all build on it.
"""
