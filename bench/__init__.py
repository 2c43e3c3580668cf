"""callboard's benchmark suite (not tests): ``python -m bench``.

Measures ``Orchestrator.dispatch`` against raw nats-py request-reply in
alternating rounds of the same run, so that the ratios callboard / raw hold on
a noisy machine; plus a fan-out pipeline, the orchestrator's memory, and CPU
profiles of both sides. See ``bench/__main__.py`` for the options and
``bench/results/`` for the latest run.
"""
