"""Disaggregated prefill/decode: the KV hand-off between pools (transfer timing, links).

May import: pydantic and ``dynosim.hardware`` (KV bytes per token). Clock-neutral and engine-free, so
``dynosim.deploy`` can use it in both worlds.
"""
