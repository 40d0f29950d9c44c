"""Online mode: the new index is built next to the source and the aliases clients query move
to it in one step, so queries never fail.

* :mod:`~rvlm.core.migrate.online.executor`: the online executor (``execute_online``: an
  index-only change, or a blue/green copy) and its rollback;
* :mod:`~rvlm.core.migrate.online.blue_green`: a change that rewrites documents, copied to a
  target prefix while the source serves (the protocol: phases, resume, fault points);
* :mod:`~rvlm.core.migrate.online.capture`, :mod:`~rvlm.core.migrate.online.copier`,
  :mod:`~rvlm.core.migrate.online.mirror`: change capture, the copy engine, one batch's copy;
* :mod:`~rvlm.core.migrate.online.finalize`: ``rvlm finalize`` (back up, then delete the
  source keys);
* :mod:`~rvlm.core.migrate.online.checks`, :mod:`~rvlm.core.migrate.online.footprint`: what
  the planner and apply check first (prefixes, notifications, memory);
* :mod:`~rvlm.core.migrate.online.throttle`, :mod:`~rvlm.core.migrate.online.control`,
  :mod:`~rvlm.core.migrate.online.lag`, :mod:`~rvlm.core.migrate.online.options`: being a good
  neighbour (throttling, status, commands from another shell, forwarding lag) and the options.
"""
