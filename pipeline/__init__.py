"""Training pipeline of the weekly demand forecaster (CLI: `demand`).

Modules import torch only where they train or export, so that the CLI starts
instantly and the service can reuse the torch-free parts (schema, registry,
bundle).
"""
