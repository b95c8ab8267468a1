"""pystock-training: train, evaluate and register the pyStock up/down classifier with MLflow.

Importing this package has no side effects: no tracking URI is set, no folder is created.
"""

__version__ = "0.1.0"
