"""The runtime: how a :class:`~straxio.plan.RunPlan` runs on an event loop.

Self-contained below :mod:`straxio.processor`, which is its only user: it
receives plans and stores as plain data and never calls back into what made
them. One module per concept:

- :mod:`.executors`: the thread and process pools, a compute submitted to
  them (:class:`~.executors.Job`), abandoned threads;
- :mod:`.process_pool` and :mod:`.worker`: the process pool whose workers can
  be killed one at a time, and what runs inside a worker;
- :mod:`.inline`: when a compute runs on the loop instead of in a thread;
- :mod:`.monitor`: who waits on which mailbox; stalls;
- :mod:`.dispatch`: the one ordered, bounded in-flight loop (stages, loaders);
- :mod:`.stage`: plugins computed batch by batch (fused or alone);
- :mod:`.compute`: what a plugin running its own ``iter`` calls to compute;
- :mod:`.storage_tasks`: savers and loaders;
- :mod:`.run`: one run's tasks, mailboxes and failure handling;
- :mod:`.errors`: the notes that name plugin, run and chunk.
"""
