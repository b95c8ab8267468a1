"""pystock-training: train, evaluate and register the pyStock up/down classifier with MLflow.

Importing this package has no side effects: no tracking URI is set, no folder is created.
"""

import os

__version__ = "0.1.0"
# This process's parent as soon as the package is imported, before the heavy imports (MLflow,
# XGBoost: seconds): tracking.die_with_parent compares with it to see a parent that died meanwhile.
PARENT_AT_START = os.getppid()
