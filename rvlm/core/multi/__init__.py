"""Multi-index runs (``rvlm batch``): one schema patch over many indexes, resumable.

:mod:`~rvlm.core.multi.plan`, :mod:`~rvlm.core.multi.planner`, :mod:`~rvlm.core.multi.state`,
:mod:`~rvlm.core.multi.report`, :mod:`~rvlm.core.multi.executor`.
"""
