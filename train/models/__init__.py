"""Model families. Each module registers its families in :mod:`train.registry`."""
