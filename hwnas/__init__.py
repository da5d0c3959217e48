"""hwnas: hardware-aware neural architecture search.

Profile a device into a latency table, search a once-for-all supernet for the
Pareto-optimal subnets under a latency budget, export the chosen subnet.
"""

__version__ = "0.1.0"
