"""rvlm-hash-to-json: an rvlm plugin that moves an index's documents from hash to JSON storage.

Installed with pip, it is found through the ``rvlm`` entry point group; see the README.
"""

from __future__ import annotations

__version__ = "0.1.0"
