"""rvlm-computed-vector: an rvlm plugin that adds a vector field computed from existing data.

Installed with pip, it is found through the ``rvlm`` entry point group; see the README.
"""

from __future__ import annotations

__version__ = "0.1.0"
