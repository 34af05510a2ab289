"""effnas's engine: what both search stages share (data, training, objective, the study layer,
results, config schemas and the CLI shell). Nothing here knows about stage 1 or stage 2.

Importing this package is cheap: subpackages load torch and optuna only when imported.
"""
