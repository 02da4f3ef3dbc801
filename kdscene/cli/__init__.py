"""Entry points (``kdscene-train``, ``-eval``, ``-quickstart``, ``-cache``): the only place that knows Hydra.

The modules stack without cycles, lightest first: :mod:`~kdscene.cli.config` (where the configs are,
composing them, keys that moved) and :mod:`~kdscene.cli.recipe` (the typed distill recipe) import
only Hydra and OmegaConf; :mod:`~kdscene.cli.fit` (one Lightning fit of one stage) imports torch and
Lightning; :mod:`~kdscene.cli.train` holds :func:`~kdscene.cli.train.train`, the one function that
runs a job, and the console entry point, which imports the heavy modules only when a job runs (so
``--help`` and tab completion stay fast); :mod:`~kdscene.cli.evaluate`,
:mod:`~kdscene.cli.quickstart` and :mod:`~kdscene.cli.cache` (``kdscene-cache``) build on them.
"""
