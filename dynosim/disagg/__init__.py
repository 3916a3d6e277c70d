"""Disaggregated prefill/decode: the KV hand-off between pools (transfer timing, links)."""
