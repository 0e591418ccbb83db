"""The paper's experiments: networks, losses, data loaders, metrics, evaluation, registry."""
