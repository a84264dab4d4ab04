"""Runtime: the run object (``run``), one rank's training (``worker``), rank launch and the process
group (``launch``), trainer callbacks (``callbacks``, ``generation``), time-limit handling inside a
job (``preemption``), the console and a run's ``loss.png`` (``plots``).

May import ``build``, ``data``, ``config`` and ``base``; never ``sweep`` or ``cli``.
"""
