"""datacomp: data-centric model compression.

Shrink the data a model is trained on (dataset distillation, data selection), and measure whether the saving pays
for itself (cost-ratio accounting).
"""

__version__ = "0.1.0"
