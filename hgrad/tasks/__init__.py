"""The paper's experiments: networks, losses, data loaders, metrics, evaluation, registry."""

from hgrad.tasks import registry
