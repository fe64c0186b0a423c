"""Core: owns every copy decision. ``service.py`` is the async shell (with ``journal.py`` and
``router.py``); ``engine.py`` and the modules it dispatches to (``master``, ``accounts``, ``reports``,
``positions``, ``recovery``) are the synchronous engine over ``state.py``, ``tx.py`` and ``context.py``."""
