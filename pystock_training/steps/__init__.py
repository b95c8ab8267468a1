"""The three pipeline steps, one module each: train_model, evaluate_model and register_model.

Each opens its own run (resumed from ``MLFLOW_RUN_ID`` under ``mlflow run``), logs what it made,
and returns it, so tests call these functions directly against a real SQLite store. Nothing is
imported here: each step's process imports only its own module and what that needs.
"""
