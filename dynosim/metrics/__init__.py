"""What a run measured, defined once.

Owns the per-request frame and the run summary (``collector``: aiperf and
Dynamo definitions, one schema for simulated and live runs), the metric
catalogue (``catalog``: key, place in the summary, unit, label, direction;
every table, filter and comparison reads it), the pooled token gaps
(``token_gaps``), percentiles (``stats``), the timeline sampler and its plots
(``timeline``, ``plots``) and Chrome trace events (``trace_events``).

May import: numpy, pandas, matplotlib (plots only), ``dynosim.request``,
``dynosim.clock``. Never the simulator, engines, router or live code: both
worlds feed it plain data.
"""
